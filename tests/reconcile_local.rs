//! `dbward reconcile --local` end to end: the binary against the real PostgreSQL and MariaDB,
//! twice into the same `--out` directory (the second run changes nothing and keeps passwords),
//! and a denied object reported as `dbward validate` reports it.

mod common;

use std::process::{Command, Output};

use common::{secret_data, unique};

fn dbward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbward"))
        .args(args)
        .output()
        .expect("run dbward")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Manifests with unique names: services on both servers, a database, a user with a readWrite
/// privilege and a claim on each, and a pool (realised: PgBouncer's files and a Secret).
fn manifests(p: &str) -> String {
    let ns = format!("{}ns", p.replace('_', "-"));
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata:
  name: {p}pg-admin
  namespace: dbward-system
  labels: {{dbward.dev/connector-type: shared-database}}
stringData: {{endpoint: 127.0.0.1, port: "5432", user: postgres, password: "", type: postgres, sslmode: disable}}
---
apiVersion: v1
kind: Secret
metadata:
  name: {p}my-admin
  namespace: dbward-system
  labels: {{dbward.dev/connector-type: shared-database}}
data: {{endpoint: MTI3LjAuMC4x, port: MzMwNg==, user: cm9vdA==, password: "", type: bXlzcWw=}}
---
apiVersion: dbward.dev/v1alpha1
kind: DatabaseService
metadata: {{name: {svc}-pg}}
spec:
  engine: postgres
  project: proj
  connectorSecretRef: {{name: {p}pg-admin, namespace: dbward-system}}
  allowedNamespaces: {{names: ["*"]}}
---
apiVersion: dbward.dev/v1alpha1
kind: DatabaseService
metadata: {{name: {svc}-my}}
spec:
  engine: mysql
  project: proj
  connectorSecretRef: {{name: {p}my-admin}}
  allowedNamespaces: {{names: ["*"]}}
---
apiVersion: dbward.dev/v1alpha1
kind: Database
metadata: {{name: pgdb, namespace: {ns}}}
spec: {{project: proj, serviceName: {svc}-pg, databaseName: {p}pgdb, deletionPolicy: Delete}}
---
apiVersion: dbward.dev/v1alpha1
kind: Database
metadata: {{name: mydb, namespace: {ns}}}
spec: {{project: proj, serviceName: {svc}-my, databaseName: {p}mydb, deletionPolicy: Delete}}
---
apiVersion: dbward.dev/v1alpha1
kind: ServiceUser
metadata: {{name: pguser, namespace: {ns}}}
spec:
  project: proj
  serviceName: {svc}-pg
  username: {p}pguser
  privileges: [{{database: {p}pgdb, level: readWrite}}]
  connInfoSecretTarget: {{name: pguser-creds, labels: {{app: demo}}}}
---
apiVersion: dbward.dev/v1alpha1
kind: ServiceUser
metadata: {{name: myuser, namespace: {ns}}}
spec:
  project: proj
  serviceName: {svc}-my
  username: {p}myuser
  privileges: [{{database: {p}mydb, level: readOnly}}]
---
apiVersion: dbward.dev/v1alpha1
kind: DatabaseClaim
metadata: {{name: store, namespace: {ns}}}
spec: {{project: proj, serviceName: {svc}-pg}}
---
apiVersion: dbward.dev/v1alpha1
kind: ConnectionPool
metadata: {{name: pool, namespace: {ns}}}
spec: {{project: proj, serviceName: {svc}-pg, databaseName: {p}pgdb}}
"#,
        svc = p.trim_end_matches('_').replace('_', "-"),
    )
}

async fn cleanup(p: &str, claim_db: &str) {
    let pg = common::pg();
    let my = common::my();
    for db in [format!("{p}pgdb"), claim_db.to_owned()] {
        let _ = pg.drop_database(&db).await;
    }
    let svc = format!("{}-pg", p.trim_end_matches('_').replace('_', "-"));
    let lookup = dbward::reconcile::pooler::lookup_role(&svc);
    for role in [format!("{p}pguser"), claim_db.to_owned(), lookup] {
        let _ = pg.drop_role(&role).await;
    }
    let _ = my.drop_database(&format!("{p}mydb")).await;
    let _ = my.drop_role(&format!("{p}myuser")).await;
}

#[tokio::test]
async fn reconcile_local_twice_changes_nothing_the_second_time() {
    let p = unique();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("objects.yaml");
    std::fs::write(&input, manifests(&p)).unwrap();
    let out = dir.path().join("secrets");
    let ns = format!("{}ns", p.replace('_', "-"));
    // The claim's names: readable part, then a hash of namespace and name (PostgreSQL's limit).
    let claim_db = dbward::api::database_claim::derived_name(&ns, "store", 63);
    assert!(claim_db.starts_with(&format!("{}_store_", ns.replace('-', "_"))));

    let args = [
        "reconcile",
        "--local",
        "-f",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let first = dbward(&args);
    let stdout = text(&first.stdout);
    assert!(first.status.success(), "{stdout}\n{}", text(&first.stderr));
    assert!(
        stdout.contains(&format!("create database \"{p}pgdb\"")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("create role \"{p}myuser\"")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("apply Secret {ns}/pguser-creds")),
        "{stdout}"
    );
    // The pool (no `username`): PgBouncer's files, and a Secret without credentials.
    assert!(
        stdout.contains(&format!("connectionpool {ns}/pool: apply Secret {ns}/pool")),
        "{stdout}"
    );
    let svc = format!("{}-pg", p.trim_end_matches('_').replace('_', "-"));
    let pooler = out.join("pooler").join(&svc);
    let ini = std::fs::read_to_string(pooler.join("pgbouncer.ini")).expect("pgbouncer.ini");
    assert!(
        ini.contains(&format!(
            "\npool = host=127.0.0.1 port=5432 dbname={p}pgdb pool_mode=transaction pool_size=10 "
        )),
        "{ini}"
    );
    assert!(pooler.join("hba.conf").exists() && pooler.join("userlist.txt").exists());
    let pool_data = secret_data(&out.join(format!("{ns}.pool.yaml")));
    assert_eq!(pool_data["CONNECTIONPOOL_USER"], "");
    assert_eq!(pool_data["CONNECTIONPOOL_PASSWORD"], "");
    assert_eq!(
        pool_data["CONNECTIONPOOL_DATABASE_URI"],
        "postgres://127.0.0.1:6432/pool?sslmode=disable"
    );
    assert!(!stdout.contains("no changes"));

    let pg_secret = out.join(format!("{ns}.pguser-creds.yaml"));
    let my_secret = out.join(format!("{ns}.myuser.yaml"));
    let claim_secret = out.join(format!("{ns}.store.yaml"));
    let pg_data = secret_data(&pg_secret);
    let password = pg_data["SERVICEUSER_PASSWORD"].clone();
    assert!(password.len() >= 32);
    assert!(!stdout.contains(&password), "no secret on stdout");
    assert_eq!(
        pg_data["SERVICEUSER_DATABASE_URI"],
        format!("postgres://{p}pguser:{password}@127.0.0.1:5432/{p}pgdb?sslmode=disable")
    );
    assert_eq!(secret_data(&my_secret).len(), 7);
    assert_eq!(
        secret_data(&claim_secret)["DATABASECLAIM_DATABASE"],
        claim_db
    );

    // The password works: the server holds it.
    let state = common::pg()
        .observe_role(&format!("{p}pguser"), Some(&password))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.password, dbward::sql::PasswordState::Matches);

    let second = dbward(&args);
    let stdout2 = text(&second.stdout);
    assert!(
        second.status.success(),
        "{stdout2}\n{}",
        text(&second.stderr)
    );
    assert!(stdout2.contains("no changes"), "{stdout2}");
    assert!(!stdout2.contains("apply Secret"), "{stdout2}");
    assert_eq!(secret_data(&pg_secret)["SERVICEUSER_PASSWORD"], password);

    cleanup(&p, &claim_db).await;
}

#[test]
fn denied_objects_are_reported_like_validate_and_not_applied() {
    let p = unique();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.yaml");
    let bad = format!(
        r#"
apiVersion: dbward.dev/v1alpha1
kind: ServiceUser
metadata: {{name: hostile, namespace: team-a}}
spec:
  project: proj
  serviceName: nowhere
  username: "{p}x\"; DROP TABLE t; --"
"#
    );
    std::fs::write(&input, bad).unwrap();
    let out = dir.path().join("secrets");
    let run = dbward(&[
        "reconcile",
        "--local",
        "-f",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let validate = dbward(&["validate", "-f", input.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let reported = text(&run.stdout);
    let denied_line = text(&validate.stdout);
    assert!(denied_line.contains("denied"), "{denied_line}");
    assert!(
        reported.starts_with(denied_line.trim_end()),
        "{reported}\nvs\n{denied_line}"
    );
    assert!(reported.contains("no changes"));
    assert!(!out.exists(), "nothing written");
}
