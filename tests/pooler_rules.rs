//! Who may use a pooler and how: another namespace's pools refused on this namespace's
//! database and user; a pooler with TLS refusing plaintext clients but answering dbward's
//! console. Debian's `pgbouncer` runs the generated files against the local PostgreSQL.

mod common;
mod pooler_support;

use std::process::Command;

use common::free_port;
use dbward::api::PoolMode;
use dbward::pgbouncer::config::Name;
use pooler_support::{Bouncer, Names, cleanup, dbward, entry, manifests, text};

/// Another namespace's pools cannot use this namespace's database or user: refused with the
/// field that names them, no Secret written, and the pools of the owner are served meanwhile.
#[tokio::test]
async fn pools_use_only_their_namespaces_databases_and_users() {
    let n = Names::new();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let other = format!("{}-other", n.ns);
    let other_db = format!("{}odb", n.p);
    let mut objects = manifests(&n, &[("mine", "session", 2)]);
    objects.push_str(&format!(
        r#"---
apiVersion: dbward.dev/v1alpha1
kind: Database
metadata: {{name: odb, namespace: {other}}}
spec: {{project: proj, serviceName: {svc}, databaseName: {other_db}, deletionPolicy: Delete}}
---
apiVersion: dbward.dev/v1alpha1
kind: ConnectionPool
metadata: {{name: steal-db, namespace: {other}}}
spec: {{project: proj, serviceName: {svc}, databaseName: {db}}}
---
apiVersion: dbward.dev/v1alpha1
kind: ConnectionPool
metadata: {{name: steal-user, namespace: {other}}}
spec: {{project: proj, serviceName: {svc}, databaseName: {other_db}, username: {user}}}
"#,
        svc = n.svc,
        db = n.db,
        user = n.user,
    ));
    let file = tmp.path().join("objects.yaml");
    std::fs::write(&file, objects).unwrap();
    let run = dbward(&[
        "reconcile",
        "--local",
        "-f",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--pooler-listen",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    let stderr = text(&run.stderr);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "connectionpool {other}/steal-db: spec.databaseName: Forbidden: database \"{}\"",
                n.db
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "connectionpool {other}/steal-user: spec.username: Forbidden: role \"{}\"",
                n.user
            )),
            "{stderr}"
        );
        for name in ["steal-db", "steal-user"] {
            assert!(!out.join(format!("{other}.{name}.yaml")).exists(), "{name}");
        }
        assert!(out.join(format!("{}.mine.yaml", n.ns)).exists());
        let ini =
            std::fs::read_to_string(out.join("pooler").join(&n.svc).join("pgbouncer.ini")).unwrap();
        assert!(ini.contains("\nmine = ") && !ini.contains("steal"), "{ini}");
    }));
    let _ = common::pg().drop_database(&other_db).await;
    cleanup(&n).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A pooler with TLS (rendered as the controller renders it for `spec.pooler.tls`): every
/// client must use TLS, but the admin console stays reachable in plain TCP for dbward.
#[test]
fn with_tls_clients_must_use_it_and_the_console_answers_dbward() {
    use dbward::pgbouncer::config::{
        self, AuthSecret, ClientTls, FilePath, Host, ServerTarget, Settings, TlsMode,
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pooler").join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let at = |f: &str| dir.join(f).display().to_string();
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-keyout",
            &at("tls.key"),
            "-out",
            &at("tls.crt"),
        ])
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let name = |n: &str| Name::new("n", n).unwrap();
    let path = |f: &str| FilePath::new("p", &at(f)).unwrap();
    let port = free_port();
    let settings = Settings {
        listen_addr: Host::new("h", "127.0.0.1").unwrap(),
        listen_port: port,
        hba_file: path("hba.conf"),
        auth_file: path("userlist.txt"),
        auth_user: name("dbward_pgbouncer_tls"),
        auth_query: dbward::pgbouncer::lookup::auth_query(),
        admin_user: name("adm"),
        max_client_conn: 10,
        server: ServerTarget {
            host: Host::new("h", "127.0.0.1").unwrap(),
            port: 5432,
            tls_mode: TlsMode::Disable,
            ca_file: None,
        },
        client_tls: Some(ClientTls {
            // As reconcile::pooler renders it.
            mode: TlsMode::Prefer,
            cert_file: path("tls.crt"),
            key_file: path("tls.key"),
            ca_file: None,
        }),
        databases: vec![entry("p", "postgres", PoolMode::Session, 1)],
    };
    std::fs::write(
        dir.join("pgbouncer.ini"),
        config::render_ini(&settings).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("hba.conf"),
        config::render_hba(&settings.admin_user, &settings.auth_user, true),
    )
    .unwrap();
    let userlist = config::render_userlist(&[
        (name("adm"), AuthSecret::new("p", "admin-Pw1").unwrap()),
        (name("tenant"), AuthSecret::new("p", "tenant-Pw1").unwrap()),
    ]);
    std::fs::write(dir.join("userlist.txt"), userlist).unwrap();
    let bouncer = Bouncer::start(&dir.join("pgbouncer.ini"), port);
    let psql = |sslmode: &str, user: &str, password: &str, db: &str| {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                user,
                "-d",
                db,
            ])
            .args([
                "-tAc",
                if db == "pgbouncer" {
                    "SHOW VERSION"
                } else {
                    "SELECT 1"
                },
            ])
            .env("PGSSLMODE", sslmode)
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap()
    };
    let console = psql("disable", "adm", "admin-Pw1", "pgbouncer");
    assert!(
        console.status.success(),
        "{}{}",
        text(&console.stderr),
        bouncer.log()
    );
    let plain = psql("disable", "tenant", "tenant-Pw1", "p");
    assert!(!plain.status.success());
    assert!(
        text(&plain.stderr).contains("login rejected"),
        "{}",
        text(&plain.stderr)
    );
    // Over TLS the tenant passes hba.conf and PgBouncer goes on to the server (where no such
    // role exists): refused by PostgreSQL, not by the TLS rule.
    let tls = psql("require", "tenant", "tenant-Pw1", "p");
    let stderr = text(&tls.stderr);
    assert!(
        stderr.contains("role \"tenant\" does not exist"),
        "{stderr}"
    );
}
