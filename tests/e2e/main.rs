//! End to end on a real Kubernetes API server: kubectl apply → webhook → reconcile → databases.
//!
//! Runs against whatever cluster `KUBECONFIG` names (the loopback control plane of
//! `../shared/kube-apiserver/` in CI, kind or a real cluster for a user), and is skipped, saying
//! so, when none is set. It installs `crds/`, runs `dbward webhook` and `dbward controller` as
//! processes on this host, registers the webhook by URL, and drives everything with real
//! kubectl (`$KUBECTL`, else the one `../shared/kube-apiserver/build.sh` caches, else `kubectl`).
//! The services are this machine's PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306).
//!
//! One test, in steps, because the steps share one cluster and build on each other.

mod harness;

use harness::{Cluster, eventually, psql};

#[test]
fn end_to_end() {
    let Some(cluster) = Cluster::from_env() else {
        eprintln!("e2e skipped: KUBECONFIG is not set (see README, \"End to end\")");
        return;
    };
    let started = std::time::Instant::now();
    let mut dbward = cluster.install();

    // --- every example applies, and the stored objects carry the defaults ---------------------
    let out = cluster.kubectl(&["apply", "-R", "-f", "examples/"]);
    assert!(out.ok(), "examples/ must apply: {}", out.text());
    let pool = cluster.get_json("connectionpool", "default", "my-connection-pool");
    assert_eq!(
        pool["spec"]["connInfoSecretTarget"],
        serde_json::json!({"name": "my-connection-pool", "prefix": "CONNECTIONPOOL_"})
    );
    let user = cluster.get_json("serviceuser", "team-a", "orders-reporting");
    assert_eq!(
        user["spec"]["connInfoSecretTarget"]["prefix"],
        "SERVICEUSER_"
    );

    // --- invalid manifests fail at apply time with dbward's message --------------------------
    let bad_mode = harness::manifest(
        "ConnectionPool",
        "team-a",
        "bad-mode",
        "project: platform\n  serviceName: shared-pg\n  databaseName: orders\n  poolMode: bulk",
    );
    let out = cluster.apply_stdin(&bad_mode, &[]);
    assert!(
        !out.ok()
            && out
                .text()
                .contains(r#"spec.poolMode: Unsupported value: "bulk""#),
        "{}",
        out.text()
    );

    let moved = harness::manifest(
        "ConnectionPool",
        "team-a",
        "orders-pool",
        "project: elsewhere\n  serviceName: shared-pg\n  databaseName: orders\n  username: orders_app\n  poolSize: 20",
    );
    for dry_run in [&[][..], &["--dry-run=server"][..]] {
        let out = cluster.apply_stdin(&moved, dry_run);
        assert!(!out.ok(), "changing project must fail ({dry_run:?})");
        assert!(
            out.text()
                .contains(r#"spec.project: Invalid value: "elsewhere": field is immutable"#),
            "{dry_run:?}: {}",
            out.text()
        );
    }

    let unprefixed = harness::manifest(
        "PostgresCluster",
        "team-a",
        "x-db",
        "teamId: acid\n  numberOfInstances: 1\n  volume: {size: 1Gi}\n  postgresql: {version: \"16\"}\n  users: {app: [login, nologin]}",
    );
    for dry_run in [&[][..], &["--dry-run=server"][..]] {
        let out = cluster.apply_stdin(&unprefixed, dry_run);
        let text = out.text();
        assert!(!out.ok(), "{dry_run:?}");
        assert!(
            text.contains(
                r#"metadata.name: Invalid value: "x-db": must start with teamId "acid-""#
            ),
            "{text}"
        );
        assert!(
            text.contains("login and nologin are mutually exclusive"),
            "both errors at once: {text}"
        );
    }

    // --- terminationProtection refuses DELETE -------------------------------------------------
    let out = cluster.kubectl(&["delete", "database", "orders", "-n", "team-a"]);
    assert!(
        !out.ok() && out.text().contains("terminationProtection"),
        "{}",
        out.text()
    );

    // --- below a policy minimum: admitted, and kubectl prints the warning ---------------------
    let small = harness::manifest(
        "PostgresCluster",
        "team-a",
        "acid-small",
        "teamId: acid\n  numberOfInstances: 1\n  volume: {size: 1Gi}\n  postgresql: {version: \"16\"}\n  resources: {requests: {cpu: 10m, memory: 100Mi}}",
    );
    let out = cluster.apply_stdin(&small, &[]);
    assert!(out.ok(), "{}", out.text());
    assert!(
        out.stderr.contains("Warning: spec.resources.requests.cpu"),
        "kubectl shows the warning: {}",
        out.text()
    );

    // --- an AdmissionPolicy change takes effect without a restart ----------------------------
    let big_pool = harness::manifest(
        "ConnectionPool",
        "team-a",
        "big-pool",
        "project: platform\n  serviceName: shared-pg\n  databaseName: orders\n  poolMode: session\n  poolSize: 40",
    );
    assert!(cluster.apply_stdin(&big_pool, &["--dry-run=server"]).ok());
    let strict = "apiVersion: dbward.dev/v1alpha1\nkind: AdmissionPolicy\nmetadata:\n  name: default\nspec:\n  limits:\n    maxPoolSize: 30\n";
    assert!(cluster.apply_stdin(strict, &[]).ok());
    eventually("the new policy is enforced", || {
        let out = cluster.apply_stdin(&big_pool, &["--dry-run=server"]);
        (!out.ok() && out.text().contains("must be between 1 and 30")).then_some(())
    });

    // --- what users look at -----------------------------------------------------------------
    let out = cluster.kubectl(&["get", "connectionpools", "-n", "team-a"]);
    let header = out
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(
        header,
        "NAME SERVICE NAME PROJECT DATABASE USERNAME POOL SIZE POOL MODE",
        "{}",
        out.text()
    );
    let out = cluster.kubectl(&["explain", "connectionpool.spec.poolMode"]);
    assert!(
        out.stdout.contains("Mode the pool operates in"),
        "{}",
        out.text()
    );

    // --- reconcile: real databases, roles, Secrets, status ------------------------------------
    eventually("ServiceUser orders-app is Ready", || {
        cluster.ready("serviceuser", "team-a", "orders-app")
    });
    eventually("DatabaseClaim backing-store is Ready", || {
        cluster.ready("databaseclaim", "team-b", "backing-store")
    });
    eventually("Database orders is Ready", || {
        cluster.ready("database", "team-a", "orders")
    });
    assert_eq!(
        psql("SELECT count(*) FROM pg_roles WHERE rolname = 'orders_app'"),
        "1"
    );
    assert_eq!(
        psql("SELECT count(*) FROM pg_database WHERE datname = 'orders'"),
        "1"
    );
    eventually("ServiceUser inventory-app (MariaDB) is Ready", || {
        cluster.ready("serviceuser", "team-a", "inventory-app")
    });
    eventually("Database inventory (MariaDB) is Ready", || {
        cluster.ready("database", "team-a", "inventory")
    });
    let claim = cluster.get_json("databaseclaim", "team-b", "backing-store");
    let claimed = claim["status"]["databaseName"]
        .as_str()
        .expect("the claim pins its database name")
        .to_string();
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM pg_database WHERE datname = '{claimed}'"
        )),
        "1"
    );
    assert_eq!(
        harness::mariadb("SELECT count(*) FROM mysql.user WHERE user = 'inventory_app'"),
        "1"
    );
    assert_eq!(
        harness::mariadb(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'inventory_app'"
        ),
        "1"
    );
    let secret = cluster.get_json("secret", "team-a", "orders-app-db");
    let keys: Vec<&str> = secret["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "SERVICEUSER_HOST",
        "SERVICEUSER_PORT",
        "SERVICEUSER_USERNAME",
        "SERVICEUSER_PASSWORD",
        "SERVICEUSER_DATABASE_URI",
        "SERVICEUSER_SSLMODE",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["kind"],
        "ServiceUser"
    );
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/name"],
        "orders"
    );

    // a role dropped by hand comes back (the next reconcile, triggered by any change)
    harness::psql_in("orders", "DROP OWNED BY orders_reporting");
    psql("DROP ROLE orders_reporting");
    cluster.kubectl(&[
        "annotate",
        "--overwrite",
        "serviceuser",
        "orders-reporting",
        "-n",
        "team-a",
        "e2e/poke=1",
    ]);
    eventually("the dropped role is restored", || {
        (psql("SELECT count(*) FROM pg_roles WHERE rolname = 'orders_reporting'") == "1")
            .then_some(())
    });

    // deleting a ServiceUser drops the role, and the garbage collector removes its Secret
    let out = cluster.kubectl(&[
        "delete",
        "serviceuser",
        "orders-reporting",
        "-n",
        "team-a",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(out.ok(), "{}", out.text());
    assert_eq!(
        psql("SELECT count(*) FROM pg_roles WHERE rolname = 'orders_reporting'"),
        "0"
    );
    eventually("the garbage collector removes the Secret", || {
        (!cluster
            .kubectl(&["get", "secret", "orders-reporting", "-n", "team-a"])
            .ok())
        .then_some(())
    });

    // --- the webhook down: with failurePolicy Fail, applies fail; the CRDs still say what they can
    dbward.stop_webhook();
    let harmless = harness::manifest(
        "Database",
        "team-a",
        "after-webhook",
        "project: platform\n  serviceName: shared-pg",
    );
    let out = cluster.apply_stdin(&harmless, &["--dry-run=server"]);
    assert!(
        !out.ok() && out.text().contains("failed calling webhook"),
        "{}",
        out.text()
    );
    cluster.kubectl(&["delete", "validatingwebhookconfiguration", "dbward"]);
    cluster.kubectl(&["delete", "mutatingwebhookconfiguration", "dbward"]);
    eventually("CRD schema still refuses a bad poolMode", || {
        let out = cluster.apply_stdin(&bad_mode, &["--dry-run=server"]);
        (!out.ok() && out.text().contains("Unsupported value: \"bulk\"")).then_some(())
    });

    eprintln!("e2e passed in {:.1} s", started.elapsed().as_secs_f64());
}
