//! End to end on a real Kubernetes API server: kubectl apply → webhook → reconcile → databases.
//!
//! Runs against whatever cluster `KUBECONFIG` names (the loopback control plane of
//! `../shared/kube-apiserver/` in CI, kind or a real cluster for a user); without one it fails,
//! unless `DBWARD_E2E=0` skips it. It applies the rendered chart (`scripts/chart-render`), runs
//! two `dbward run` replicas as processes on this host with the chart's arguments and its
//! ServiceAccount's token, the webhook registered by URL, and drives everything with real
//! kubectl (`$KUBECTL`, else the one `../shared/kube-apiserver/build.sh` caches, else `kubectl`).
//! The services are this machine's PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306).
//!
//! One test, in steps, because the steps share one cluster and build on each other.

mod harness;
mod ops_request;
mod pooler;

use harness::{Cluster, Dbward, eventually, psql};

/// The `Ready` condition's status and reason, once the controller has written one.
fn ready_reason(
    cluster: &Cluster,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Option<(String, String)> {
    let out = cluster.kubectl(&["get", kind, name, "-n", namespace, "-o", "json"]);
    let object: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    let ready = object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .clone();
    Some((
        ready["status"].as_str()?.to_owned(),
        ready["reason"].as_str()?.to_owned(),
    ))
}

/// With the webhook configurations gone (an object reaches the API server unchecked, as with
/// `failurePolicy: Ignore` while the webhook is down), the controllers refuse the attacks of the
/// tenant-isolation issue themselves and change nothing on the server.
fn tenants_are_isolated_without_the_webhook(cluster: &Cluster) {
    // A role and a database dbward never created, made by the server's admin.
    if psql("SELECT count(*) FROM pg_roles WHERE rolname = 'e2e_victim'") == "0" {
        psql("CREATE ROLE e2e_victim LOGIN PASSWORD 'victim-Pw0rd'");
    }
    if psql("SELECT count(*) FROM pg_database WHERE datname = 'e2e_legacy'") == "0" {
        psql("CREATE DATABASE e2e_legacy");
    }
    let fingerprint = |role: &str| {
        psql(&format!(
            "SELECT concat_ws('|', rolpassword, rolsuper, rolcanlogin, \
               (SELECT string_agg(g.rolname, ',') FROM pg_auth_members m \
                  JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = a.oid)) \
             FROM pg_authid a WHERE rolname = '{role}'"
        ))
    };
    let victim_before = fingerprint("e2e_victim");
    let admin_before = fingerprint("postgres");
    let legacy_owner =
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'e2e_legacy'";
    let legacy_owner_before = psql(legacy_owner);

    let attacks = [
        (
            "serviceuser",
            "takeover",
            "username: e2e_victim",
            "NameTaken",
        ),
        ("serviceuser", "admin", "username: postgres", "Denied"),
        (
            "serviceuser",
            "escalate",
            "username: e2e_escalate\n  inRoles: [pg_read_server_files]",
            "Denied",
        ),
        (
            "serviceuser",
            "sysgrant",
            "username: e2e_sysgrant\n  privileges: [{database: postgres, level: owner}]",
            "Denied",
        ),
        (
            "database",
            "legacy",
            "databaseName: e2e_legacy\n  owner: e2e_victim\n  deletionPolicy: Delete",
            "NameTaken",
        ),
    ];
    for (kind, name, spec, _) in attacks {
        let kind_name = if kind == "database" {
            "Database"
        } else {
            "ServiceUser"
        };
        let manifest = harness::manifest(
            kind_name,
            "team-b",
            name,
            &format!("project: platform\n  serviceName: shared-pg\n  {spec}"),
        );
        let out = cluster.apply_stdin(&manifest, &[]);
        assert!(
            out.ok(),
            "without the webhook the API server stores it: {}",
            out.text()
        );
    }
    for (kind, name, _, reason) in attacks {
        let (status, got) = eventually(&format!("{kind} team-b/{name} is refused"), || {
            ready_reason(cluster, kind, "team-b", name)
        });
        assert_eq!(
            (status.as_str(), got.as_str()),
            ("False", reason),
            "{kind} {name}"
        );
    }
    assert_eq!(
        fingerprint("e2e_victim"),
        victim_before,
        "the victim's role is untouched"
    );
    assert_eq!(
        fingerprint("postgres"),
        admin_before,
        "the admin role is untouched"
    );
    assert_eq!(psql(legacy_owner), legacy_owner_before);
    for role in ["e2e_escalate", "e2e_sysgrant"] {
        assert_eq!(
            psql(&format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"
            )),
            "0",
            "{role} was never created"
        );
    }
    assert!(
        !cluster
            .kubectl(&["get", "secret", "takeover", "-n", "team-b"])
            .ok(),
        "no credentials Secret for the taken-over role"
    );

    // Deleting the refused Database (deletionPolicy Delete) drops nothing that is not its own.
    let out = cluster.kubectl(&[
        "delete",
        "database",
        "legacy",
        "-n",
        "team-b",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(out.ok(), "{}", out.text());
    assert_eq!(
        psql("SELECT count(*) FROM pg_database WHERE datname = 'e2e_legacy'"),
        "1",
        "a database dbward did not create is never dropped"
    );
}

/// The example DatabaseQueryResource, polled by the running controller: once the ServiceUsers'
/// roles exist, a spec change polls at once and each role of the orders team becomes a
/// ConfigMap (the chart's RBAC lets the controller list, apply and label them).
fn query_resource_example_renders_its_rows(cluster: &Cluster) {
    let out = cluster.kubectl(&[
        "patch",
        "dbqr",
        "user-configmaps",
        "-n",
        "team-a",
        "--type=merge",
        "-p",
        r#"{"spec":{"pollInterval":"45s"}}"#,
    ]);
    assert!(out.ok(), "{}", out.text());
    let map = eventually("the example's ConfigMap for orders_app exists", || {
        let out = cluster.kubectl(&[
            "get",
            "configmap",
            "role-orders-app",
            "-n",
            "team-a",
            "-o",
            "json",
        ]);
        serde_json::from_str::<serde_json::Value>(&out.stdout).ok()
    });
    assert_eq!(map["data"]["username"], "orders_app");
    assert_eq!(
        map["metadata"]["labels"]["dbward.dev/managed-by"],
        "user-configmaps"
    );
    assert_eq!(
        map["metadata"]["ownerReferences"][0]["kind"],
        "DatabaseQueryResource"
    );
    let status = eventually("the example's status counts the rows it applied", || {
        let object = cluster.get_json("dbqr", "team-a", "user-configmaps");
        let status = object["status"].clone();
        (status["observedGeneration"] == object["metadata"]["generation"]
            && status["rows"].as_u64() >= Some(2))
        .then_some(status)
    });
    assert_eq!(status["conditions"][0]["status"], "True", "{status}");
}

#[test]
fn end_to_end() {
    if std::env::var("DBWARD_E2E").as_deref() == Ok("0") {
        eprintln!("e2e skipped: DBWARD_E2E=0");
        return;
    }
    let Some(cluster) = Cluster::from_env() else {
        panic!(
            "KUBECONFIG does not name a cluster file; the end-to-end suite needs one \
             (scripts/test starts one; DBWARD_E2E=0 skips it; see README, \"End to end\")"
        );
    };
    let started = std::time::Instant::now();
    let mut dbward = cluster.install();

    // --- every example applies, and the stored objects carry the defaults ---------------------
    // All but the ops requests now; those run later (ops_request.rs), so that the pooler step
    // below sees a namespace where no password changes (a rotation rewrites the pool's Secret).
    let mut examples: Vec<_> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with(ops_request::EXAMPLE))
        // What `kubectl apply -R -f examples/` reads: directories and manifests.
        .filter(|p| {
            p.is_dir()
                || matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    examples.sort();
    // One kubectl call, as `apply -R -f examples/` was: the pooler step below counts on timing.
    let mut args = vec!["apply", "-R"];
    for example in &examples {
        args.extend(["-f", example.to_str().unwrap()]);
    }
    let out = cluster.kubectl(&args);
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
    query_resource_example_renders_its_rows(&cluster);
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

    pooler::a_pool_gets_its_pooler(&cluster, &dbward);
    let (rotation, password) = ops_request::the_example_rotation_ran(&cluster);
    let rotated = ops_request::one_request_per_target(&cluster, &password);

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

    tenants_are_isolated_without_the_webhook(&cluster);
    a_service_in_use_waits_for_its_dependents(&cluster);
    the_controllers_pass_between_replicas(&cluster, &mut dbward);
    ops_request::not_run_again(&cluster, &rotation, &rotated);
    dbward.assert_no_call_was_forbidden();

    eprintln!("e2e passed in {:.1} s", started.elapsed().as_secs_f64());
}

/// Two `dbward run` replicas: killing the leader hands the controllers to the other, which goes
/// on reconciling; SIGTERM hands the Lease back at once; both answer reviews throughout, and
/// readiness never depends on leadership.
fn the_controllers_pass_between_replicas(cluster: &Cluster, dbward: &mut Dbward) {
    let (a, b) = (dbward.replica("replica-a"), dbward.replica("replica-b"));
    // replica-a was stopped with the webhook; it comes back as a follower.
    dbward.start(a);
    eventually("replica-a is ready while following", || {
        (dbward.ready(a) && dbward.answers_reviews(a)).then_some(())
    });
    assert_eq!(dbward.lease_holder(cluster).as_deref(), Some("replica-b"));

    // The leader dies without a word: the follower takes over once the lease expires.
    let killed = std::time::Instant::now();
    dbward.signal(b, "KILL");
    eventually("replica-a holds the lease", || {
        assert!(
            dbward.answers_reviews(a),
            "the follower answers reviews throughout"
        );
        (dbward.lease_holder(cluster).as_deref() == Some("replica-a")).then_some(())
    });
    eprintln!(
        "e2e: leader killed; replica-a took over after {:.1} s (lease 15 s, retry 2 s)",
        killed.elapsed().as_secs_f64()
    );
    let database = harness::manifest(
        "Database",
        "team-a",
        "after-failover",
        "project: platform\n  serviceName: shared-pg\n  databaseName: e2e_after_failover\n  deletionPolicy: Delete",
    );
    let out = cluster.apply_stdin(&database, &[]);
    assert!(out.ok(), "{}", out.text());
    eventually("the new leader reconciles", || {
        cluster.ready("database", "team-a", "after-failover")
    });
    assert_eq!(
        psql("SELECT count(*) FROM pg_database WHERE datname = 'e2e_after_failover'"),
        "1"
    );

    // SIGTERM: the leader hands the lease back before it exits.
    dbward.start(b);
    eventually("replica-b is ready while following", || {
        (dbward.ready(b) && dbward.answers_reviews(b)).then_some(())
    });
    let stopped = std::time::Instant::now();
    dbward.signal(a, "TERM");
    let exited = stopped.elapsed();
    let out = cluster.kubectl(&[
        "get",
        "lease",
        "-n",
        "dbward-system",
        "-o",
        "jsonpath={.items[0].spec.holderIdentity}/{.items[0].spec.leaseDurationSeconds}",
    ]);
    assert!(
        out.stdout == "/1" || out.stdout.starts_with("replica-b/"),
        "the lease is released when the leader stops: {}",
        out.text()
    );
    eventually("replica-b holds the lease", || {
        assert!(
            dbward.answers_reviews(b),
            "the new leader answers reviews throughout"
        );
        (dbward.lease_holder(cluster).as_deref() == Some("replica-b")).then_some(())
    });
    eprintln!(
        "e2e: leader stopped with SIGTERM in {:.1} s; replica-b took over after {:.1} s",
        exited.as_secs_f64(),
        stopped.elapsed().as_secs_f64()
    );
    let out = cluster.kubectl(&[
        "delete",
        "database",
        "after-failover",
        "-n",
        "team-a",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(out.ok(), "{}", out.text());
    assert_eq!(
        psql("SELECT count(*) FROM pg_database WHERE datname = 'e2e_after_failover'"),
        "0"
    );
}

/// Deleting a DatabaseService that objects still use waits (`Ready=False`, `InUse`) until they
/// are gone, so their cleanup still reaches the server; then the service goes.
fn a_service_in_use_waits_for_its_dependents(cluster: &Cluster) {
    let service = "apiVersion: dbward.dev/v1alpha1\nkind: DatabaseService\nmetadata:\n  name: e2e-temp\nspec:\n  engine: postgres\n  project: platform\n  connectorSecretRef: {name: shared-pg-admin, namespace: dbward-system}\n  allowedNamespaces: {names: [team-b]}\n";
    let out = cluster.apply_stdin(service, &[]);
    assert!(out.ok(), "{}", out.text());
    let user = harness::manifest(
        "ServiceUser",
        "team-b",
        "temp-user",
        "project: platform\n  serviceName: e2e-temp\n  username: e2e_temp_user",
    );
    let out = cluster.apply_stdin(&user, &[]);
    assert!(out.ok(), "{}", out.text());
    eventually("the temporary user is ready", || {
        cluster.ready("serviceuser", "team-b", "temp-user")
    });
    eventually("the service carries dbward's finalizer", || {
        let out = cluster.kubectl(&["get", "databaseservice", "e2e-temp", "-o", "json"]);
        let object: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        object["metadata"]["finalizers"]
            .as_array()?
            .iter()
            .any(|f| f == "dbward.dev/finalizer")
            .then_some(())
    });
    let out = cluster.kubectl(&["delete", "databaseservice", "e2e-temp", "--wait=false"]);
    assert!(out.ok(), "{}", out.text());
    let (status, reason) = eventually("the service in use waits", || {
        ready_reason(cluster, "databaseservice", "default", "e2e-temp")
            .filter(|(_, reason)| reason == "InUse")
    });
    assert_eq!((status.as_str(), reason.as_str()), ("False", "InUse"));
    let out = cluster.kubectl(&[
        "delete",
        "serviceuser",
        "temp-user",
        "-n",
        "team-b",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(out.ok(), "{}", out.text());
    assert_eq!(
        psql("SELECT count(*) FROM pg_roles WHERE rolname = 'e2e_temp_user'"),
        "0",
        "the dependent's role was dropped while the service was still there"
    );
    eventually("the unused service is deleted", || {
        (!cluster
            .kubectl(&["get", "databaseservice", "e2e-temp"])
            .ok())
        .then_some(())
    });
}
