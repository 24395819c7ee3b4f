//! The ConnectionPool of `examples/30-pool.yaml` on the real API server: its service's PgBouncer
//! objects in dbward's namespace, owned by the DatabaseService; the pool Secret; the status while
//! no pod runs (this control plane has no kubelet, so the admin console is never reachable);
//! resyncs that write nothing; everything gone with the last pool.

use std::io::{Read, Write};
use std::time::Duration;

use super::harness::{Cluster, Dbward, eventually, psql};
use super::ready_reason;

const OBJECTS: [&str; 4] = ["deployment", "service", "configmap", "secret"];
const NAME: &str = "shared-pg-pooler";

/// `dbward_reconcile_total` of ConnectionPools that ended `PoolerNotReady`, over all replicas.
fn not_ready_reconciles(dbward: &Dbward) -> u64 {
    let mut total = 0;
    for replica in &dbward.replicas {
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", replica.metrics)) else {
            continue;
        };
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
        let _ = write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
        let mut response = String::new();
        stream.read_to_string(&mut response).ok();
        total += response
            .lines()
            .filter(|l| {
                l.starts_with(
                    "dbward_reconcile_total{kind=\"ConnectionPool\",outcome=\"pooler_not_ready\"}",
                )
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

fn versions(cluster: &Cluster) -> Vec<String> {
    let mut out: Vec<String> = OBJECTS
        .iter()
        .map(|kind| {
            cluster.get_json(kind, "dbward-system", NAME)["metadata"]["resourceVersion"].to_string()
        })
        .collect();
    for (kind, name) in [("secret", "orders-pool"), ("connectionpool", "orders-pool")] {
        out.push(cluster.get_json(kind, "team-a", name)["metadata"]["resourceVersion"].to_string());
    }
    out
}

pub fn a_pool_gets_its_pooler(cluster: &Cluster, dbward: &Dbward) {
    let secret = eventually("the pool Secret exists", || {
        let out = cluster.kubectl(&["get", "secret", "orders-pool", "-n", "team-a", "-o", "json"]);
        out.ok()
            .then(|| serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap())
    });
    let mut keys: Vec<&str> = secret["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "CONNECTIONPOOL_CA_CERT",
            "CONNECTIONPOOL_DATABASE",
            "CONNECTIONPOOL_DATABASE_URI",
            "CONNECTIONPOOL_HOST",
            "CONNECTIONPOOL_NAME",
            "CONNECTIONPOOL_PASSWORD",
            "CONNECTIONPOOL_PORT",
            "CONNECTIONPOOL_SSLMODE",
            "CONNECTIONPOOL_USER"
        ]
    );
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["kind"],
        "ConnectionPool"
    );
    let decode = |key: &str| {
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD
            .decode(secret["data"][key].as_str().unwrap())
            .unwrap();
        String::from_utf8(b).unwrap()
    };
    assert_eq!(
        decode("CONNECTIONPOOL_HOST"),
        format!("{NAME}.dbward-system.svc")
    );
    assert_eq!(decode("CONNECTIONPOOL_DATABASE"), "orders-pool");
    assert_eq!(decode("CONNECTIONPOOL_USER"), "orders_app");

    let service = cluster.get_json("databaseservice", "default", "shared-pg");
    for kind in OBJECTS {
        let object = cluster.get_json(kind, "dbward-system", NAME);
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "DatabaseService", "{kind}");
        assert_eq!(owner["uid"], service["metadata"]["uid"], "{kind}");
    }
    let config = cluster.get_json("configmap", "dbward-system", NAME);
    let ini = config["data"]["pgbouncer.ini"].as_str().unwrap();
    assert!(
        ini.contains("\norders-pool = host=127.0.0.1 port=5432 dbname=orders pool_mode=transaction pool_size=20 "),
        "{ini}"
    );
    let deployment = cluster.get_json("deployment", "dbward-system", NAME);
    let pod = &deployment["spec"]["template"]["spec"];
    for mount in pod["containers"][0]["volumeMounts"].as_array().unwrap() {
        assert!(mount.get("subPath").is_none(), "{mount}");
    }
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    assert_eq!(
        psql(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'dbward_pgbouncer_shared_pg' AND NOT rolsuper"
        ),
        "1"
    );

    // No kubelet: the pool says so, and the controller keeps looking without writing.
    let (status, _) = eventually("the pool reports its pooler", || {
        ready_reason(cluster, "connectionpool", "team-a", "orders-pool")
            .filter(|(_, r)| r == "PoolerNotReady")
    });
    assert_eq!(status, "False");
    let before = versions(cluster);
    let count = not_ready_reconciles(dbward);
    eventually("two more reconciles of the pool ran", || {
        (not_ready_reconciles(dbward) >= count + 2).then_some(())
    });
    assert_eq!(
        versions(cluster),
        before,
        "unchanged reconciles write nothing"
    );

    // The last pool deleted: the pooler goes, and the lookup role with it.
    let out = cluster.kubectl(&[
        "delete",
        "connectionpool",
        "orders-pool",
        "-n",
        "team-a",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(out.ok(), "{}", out.text());
    for kind in OBJECTS {
        assert!(
            !cluster
                .kubectl(&["get", kind, NAME, "-n", "dbward-system"])
                .ok(),
            "{kind} {NAME} is removed"
        );
    }
    assert_eq!(
        psql("SELECT count(*) FROM pg_roles WHERE rolname = 'dbward_pgbouncer_shared_pg'"),
        "0"
    );
    eventually("the garbage collector removes the pool Secret", || {
        (!cluster
            .kubectl(&["get", "secret", "orders-pool", "-n", "team-a"])
            .ok())
        .then_some(())
    });
}
