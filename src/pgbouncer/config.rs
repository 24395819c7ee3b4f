//! Pure rendering of PgBouncer's files: `pgbouncer.ini`, `hba.conf` and the auth file
//! (`userlist.txt`), from typed fields only.
//!
//! There are no free-form settings: every value is one of the types below, each of which
//! refuses what could break out of its place in the file (newlines, quotes, `=`, spaces), so a
//! name or a password can never add a line or a setting. Output is deterministic: databases are
//! sorted by name and settings come in a fixed order, so the same input yields the same bytes
//! (and the same config hash).

use std::fmt::{self, Write as _};

use crate::api::PoolMode;

/// Why a value cannot go into a PgBouncer file: which field, the value, what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: Invalid value: {value:?}: {expected}")]
pub struct RenderError {
    /// Where the value came from (a field path such as `spec.databaseName`).
    pub field: String,
    /// The value (never a password: those are reported as `<redacted>`).
    pub value: String,
    /// What would be accepted.
    pub expected: &'static str,
}

/// PgBouncer's longest database and user names (`MAX_DBNAME`/`MAX_USERNAME` less the NUL).
pub const MAX_NAME: usize = 63;

/// A database, pool or user name: 1–63 of `A-Z a-z 0-9 _ . -` (what PgBouncer 1.18 reads
/// unquoted as a `[databases]` key and as a connect-string value).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Checks `value` (from `field`).
    pub fn new(field: &str, value: &str) -> Result<Name, RenderError> {
        let ok = !value.is_empty()
            && value.len() <= MAX_NAME
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(Name(value.to_owned()))
        } else {
            Err(RenderError {
                field: field.to_owned(),
                value: value.to_owned(),
                expected: "1 to 63 characters of A-Z, a-z, 0-9, '_', '.' and '-'",
            })
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host name or address: 1–253 of `A-Z a-z 0-9 . - _ :` (DNS names, IPv4, IPv6), or `*`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Host(String);

impl Host {
    /// Checks `value` (from `field`).
    pub fn new(field: &str, value: &str) -> Result<Host, RenderError> {
        let ok = value == "*"
            || (!value.is_empty()
                && value.len() <= 253
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':')));
        if ok {
            Ok(Host(value.to_owned()))
        } else {
            Err(RenderError {
                field: field.to_owned(),
                value: value.to_owned(),
                expected: "a host name or IP address (A-Z, a-z, 0-9, '.', '-', '_', ':'), or '*'",
            })
        }
    }

    /// The host.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An absolute file path without whitespace, quotes, `;`, `#`, `=` or control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilePath(String);

impl FilePath {
    /// Checks `value` (from `field`).
    pub fn new(field: &str, value: &str) -> Result<FilePath, RenderError> {
        let ok = value.starts_with('/')
            && value.len() <= 4096
            && value.bytes().all(|b| {
                b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b';' | b'#' | b'=' | b'\\')
            });
        if ok {
            Ok(FilePath(value.to_owned()))
        } else {
            Err(RenderError {
                field: field.to_owned(),
                value: value.to_owned(),
                expected: "an absolute path of printable ASCII without spaces, quotes, '\\', ';', '#' or '='",
            })
        }
    }

    /// The path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A secret in the auth file: a plain password or a `SCRAM-SHA-256$…` verifier, printable ASCII
/// without spaces or double quotes. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthSecret(String);

impl AuthSecret {
    /// Checks `value` (from `field`); the error does not repeat it.
    pub fn new(field: &str, value: &str) -> Result<AuthSecret, RenderError> {
        let ok = !value.is_empty()
            && value.len() <= 1024
            && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
        if ok {
            Ok(AuthSecret(value.to_owned()))
        } else {
            Err(RenderError {
                field: field.to_owned(),
                value: "<redacted>".to_owned(),
                expected: "1 to 1024 printable ASCII characters without spaces or '\"'",
            })
        }
    }
}

impl fmt::Debug for AuthSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthSecret(<redacted>)")
    }
}

/// PgBouncer's `server_tls_sslmode` / `client_tls_sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsMode {
    /// `disable`.
    Disable,
    /// `allow`.
    Allow,
    /// `prefer`.
    Prefer,
    /// `require`.
    Require,
    /// `verify-ca`.
    VerifyCa,
    /// `verify-full`.
    VerifyFull,
}

impl TlsMode {
    /// The spelling PgBouncer reads.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Allow => "allow",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// Parses PgBouncer's (and libpq's) spelling.
    pub fn parse(field: &str, value: &str) -> Result<TlsMode, RenderError> {
        Ok(match value {
            "disable" => TlsMode::Disable,
            "allow" => TlsMode::Allow,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => {
                return Err(RenderError {
                    field: field.to_owned(),
                    value: value.to_owned(),
                    expected: "one of disable, allow, prefer, require, verify-ca, verify-full",
                });
            }
        })
    }
}

/// One `[databases]` entry: the pool name clients give as database name, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PoolEntry {
    /// The name clients use (the ConnectionPool's name).
    pub name: Name,
    /// The database on the server.
    pub dbname: Name,
    /// `pool_mode`.
    pub mode: PoolMode,
    /// `pool_size` (at least 1).
    pub size: u32,
}

/// The server every pool goes to, and how PgBouncer secures that connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    /// Host.
    pub host: Host,
    /// Port.
    pub port: u16,
    /// `server_tls_sslmode`.
    pub tls_mode: TlsMode,
    /// `server_tls_ca_file`, when the connector has a CA.
    pub ca_file: Option<FilePath>,
}

/// TLS towards clients (`client_tls_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// `client_tls_sslmode`.
    pub mode: TlsMode,
    /// `client_tls_cert_file`.
    pub cert_file: FilePath,
    /// `client_tls_key_file`.
    pub key_file: FilePath,
    /// `client_tls_ca_file`, when given.
    pub ca_file: Option<FilePath>,
}

/// Everything `pgbouncer.ini` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `listen_addr`.
    pub listen_addr: Host,
    /// `listen_port`.
    pub listen_port: u16,
    /// `auth_hba_file`.
    pub hba_file: FilePath,
    /// `auth_file`.
    pub auth_file: FilePath,
    /// `auth_user` of every pool: the lookup role `auth_query` runs as.
    pub auth_user: Name,
    /// `auth_query`.
    pub auth_query: AuthQuery,
    /// `admin_users`: the one admin-console user (PgBouncer-only, never a server role).
    pub admin_user: Name,
    /// `max_client_conn`.
    pub max_client_conn: u32,
    /// The server.
    pub server: ServerTarget,
    /// TLS towards clients, when the pooler has a certificate.
    pub client_tls: Option<ClientTls>,
    /// The pools.
    pub databases: Vec<PoolEntry>,
}

/// An `auth_query`: only the one [`super::lookup`] builds, so no user text reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthQuery(pub(super) String);

impl AuthQuery {
    /// The query.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Clients a pooler accepts at once by default.
pub const DEFAULT_MAX_CLIENT_CONN: u32 = 1000;

/// `pgbouncer.ini`. Fails when two pools share a name.
pub fn render_ini(settings: &Settings) -> Result<String, RenderError> {
    let mut databases = settings.databases.clone();
    databases.sort();
    for pair in databases.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(RenderError {
                field: "metadata.name".to_owned(),
                value: pair[0].name.to_string(),
                expected: "a pool name used once per DatabaseService",
            });
        }
    }
    let mut out = String::from("; Generated by dbward from typed fields; do not edit.\n");
    out.push_str("[databases]\n");
    let server = &settings.server;
    for db in &databases {
        let _ = writeln!(
            out,
            "{} = host={} port={} dbname={} pool_mode={} pool_size={} auth_user={}",
            db.name,
            server.host.as_str(),
            server.port,
            db.dbname,
            db.mode.as_str(),
            db.size.max(1),
            settings.auth_user
        );
    }
    out.push_str("\n[pgbouncer]\n");
    let mut set = |key: &str, value: &str| {
        let _ = writeln!(out, "{key} = {value}");
    };
    set("listen_addr", settings.listen_addr.as_str());
    set("listen_port", &settings.listen_port.to_string());
    set("unix_socket_dir", "");
    set("auth_type", "hba");
    set("auth_hba_file", settings.hba_file.as_str());
    set("auth_file", settings.auth_file.as_str());
    // `auth_user` per database, never globally: with a global one, PgBouncer 1.18 runs
    // `auth_query` for an unknown user of the admin console too, where no server answers, and
    // the client hangs instead of being refused.
    set("auth_query", settings.auth_query.as_str());
    set("admin_users", settings.admin_user.as_str());
    set("max_client_conn", &settings.max_client_conn.to_string());
    set("ignore_startup_parameters", "extra_float_digits");
    set("server_tls_sslmode", server.tls_mode.as_str());
    if let Some(ca) = &server.ca_file {
        set("server_tls_ca_file", ca.as_str());
    }
    if let Some(tls) = &settings.client_tls {
        set("client_tls_sslmode", tls.mode.as_str());
        set("client_tls_cert_file", tls.cert_file.as_str());
        set("client_tls_key_file", tls.key_file.as_str());
        if let Some(ca) = &tls.ca_file {
            set("client_tls_ca_file", ca.as_str());
        }
    }
    Ok(out)
}

/// What only a restart changes (PgBouncer's RELOAD keeps the sockets it listens on): the
/// listen address and port. A change here rolls the pods; everything else is RELOADed.
pub fn restart_settings(settings: &Settings) -> String {
    format!(
        "listen_addr={} listen_port={}",
        settings.listen_addr.as_str(),
        settings.listen_port
    )
}

/// `hba.conf`: the admin user only on the `pgbouncer` console, the lookup role nowhere, every
/// other user by SCRAM (clients over TLS only when `tls_only`). PgBouncer takes the first line that
/// matches.
pub fn render_hba(admin_user: &Name, auth_user: &Name, tls_only: bool) -> String {
    let client = if tls_only { "hostssl" } else { "host" };
    let mut out = String::from("# Generated by dbward; do not edit.\n");
    // The console is dbward's, reached from its own pod (SCRAM; no client certificate needed).
    for net in ["0.0.0.0/0", "::/0"] {
        let _ = writeln!(out, "host pgbouncer {admin_user} {net} scram-sha-256");
    }
    for net in ["0.0.0.0/0", "::/0"] {
        let _ = writeln!(out, "host all {admin_user} {net} reject");
        let _ = writeln!(out, "host all {auth_user} {net} reject");
        let _ = writeln!(out, "host pgbouncer all {net} reject");
    }
    for net in ["0.0.0.0/0", "::/0"] {
        let _ = writeln!(out, "{client} all all {net} scram-sha-256");
    }
    out
}

/// The auth file: one `"user" "secret"` line per entry, sorted by user.
pub fn render_userlist(entries: &[(Name, AuthSecret)]) -> String {
    let mut sorted: Vec<&(Name, AuthSecret)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (user, secret) in sorted {
        let _ = writeln!(out, "\"{user}\" \"{}\"", secret.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> FilePath {
        FilePath::new("path", p).unwrap()
    }

    fn name(n: &str) -> Name {
        Name::new("name", n).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            listen_addr: Host::new("listen", "0.0.0.0").unwrap(),
            listen_port: 5432,
            hba_file: path("/etc/pgbouncer/config/hba.conf"),
            auth_file: path("/etc/pgbouncer/auth/userlist.txt"),
            auth_user: name("dbward_pgbouncer_svc"),
            auth_query: super::super::lookup::auth_query(),
            admin_user: name("dbward_admin"),
            max_client_conn: DEFAULT_MAX_CLIENT_CONN,
            server: ServerTarget {
                host: Host::new("endpoint", "db.example").unwrap(),
                port: 5433,
                tls_mode: TlsMode::Require,
                ca_file: Some(path("/etc/pgbouncer/auth/server-ca.crt")),
            },
            client_tls: None,
            databases: vec![
                PoolEntry {
                    name: name("web"),
                    dbname: name("orders"),
                    mode: PoolMode::Transaction,
                    size: 25,
                },
                PoolEntry {
                    name: name("batch-jobs"),
                    dbname: name("orders"),
                    mode: PoolMode::Session,
                    size: 3,
                },
            ],
        }
    }

    #[test]
    fn ini_is_exact_and_sorted() {
        let ini = render_ini(&settings()).unwrap();
        assert_eq!(
            ini,
            "; Generated by dbward from typed fields; do not edit.\n\
             [databases]\n\
             batch-jobs = host=db.example port=5433 dbname=orders pool_mode=session pool_size=3 auth_user=dbward_pgbouncer_svc\n\
             web = host=db.example port=5433 dbname=orders pool_mode=transaction pool_size=25 auth_user=dbward_pgbouncer_svc\n\
             \n[pgbouncer]\n\
             listen_addr = 0.0.0.0\n\
             listen_port = 5432\n\
             unix_socket_dir = \n\
             auth_type = hba\n\
             auth_hba_file = /etc/pgbouncer/config/hba.conf\n\
             auth_file = /etc/pgbouncer/auth/userlist.txt\n\
             auth_query = SELECT username, password FROM dbward_pgbouncer.get_auth($1)\n\
             admin_users = dbward_admin\n\
             max_client_conn = 1000\n\
             ignore_startup_parameters = extra_float_digits\n\
             server_tls_sslmode = require\n\
             server_tls_ca_file = /etc/pgbouncer/auth/server-ca.crt\n"
        );
        // Deterministic whatever the input order.
        let mut reversed = settings();
        reversed.databases.reverse();
        assert_eq!(render_ini(&reversed).unwrap(), ini);
    }

    #[test]
    fn client_tls_and_restart_settings() {
        let mut s = settings();
        s.client_tls = Some(ClientTls {
            mode: TlsMode::Require,
            cert_file: path("/etc/pgbouncer/tls/tls.crt"),
            key_file: path("/etc/pgbouncer/tls/tls.key"),
            ca_file: None,
        });
        let ini = render_ini(&s).unwrap();
        assert!(ini.ends_with(
            "client_tls_sslmode = require\nclient_tls_cert_file = /etc/pgbouncer/tls/tls.crt\nclient_tls_key_file = /etc/pgbouncer/tls/tls.key\n"
        ));
        let before = restart_settings(&s);
        s.databases.pop();
        s.max_client_conn = 10;
        assert_eq!(restart_settings(&s), before, "pools and limits reload");
        s.listen_port = 6432;
        assert_ne!(restart_settings(&s), before, "the port needs a restart");
    }

    #[test]
    fn duplicate_pool_names_are_refused() {
        let mut s = settings();
        let mut dup = s.databases[0].clone();
        dup.dbname = name("other");
        s.databases.push(dup);
        let err = render_ini(&s).unwrap_err();
        assert_eq!(err.field, "metadata.name");
        assert_eq!(err.value, "web");
    }

    #[test]
    fn values_that_could_break_out_are_refused() {
        for bad in [
            "",
            "a b",
            "a\nb",
            "a=b",
            "a\"b",
            "a'b",
            "a;b",
            "a#b",
            "é",
            &"x".repeat(64),
        ] {
            let err = Name::new("spec.databaseName", bad).unwrap_err();
            assert_eq!(err.field, "spec.databaseName", "{bad:?}");
            assert!(err.expected.contains("A-Z"), "{err}");
        }
        for good in ["orders", "my-pool.v2", "_x", &"x".repeat(63)] {
            assert!(Name::new("f", good).is_ok(), "{good:?}");
        }
        for bad in ["db\nauth_type = trust", "a b", "", "h;x"] {
            assert!(Host::new("endpoint", bad).is_err(), "{bad:?}");
        }
        for good in ["127.0.0.1", "::1", "db.example.svc", "*"] {
            assert!(Host::new("endpoint", good).is_ok(), "{good:?}");
        }
        for bad in ["relative", "/a b", "/a\n", "/a\"", "/a;b", "/a=b"] {
            assert!(FilePath::new("path", bad).is_err(), "{bad:?}");
        }
        let err = AuthSecret::new("password", "pw\" \"x").unwrap_err();
        assert_eq!(err.value, "<redacted>");
        assert!(AuthSecret::new("password", "pw\nx").is_err());
        assert!(AuthSecret::new("password", "").is_err());
        assert!(!format!("{:?}", AuthSecret::new("p", "hunter2").unwrap()).contains("hunter2"));
    }

    #[test]
    fn hba_rejects_the_lookup_role_and_keeps_the_console_to_the_admin() {
        let hba = render_hba(&name("adm"), &name("lookup"), false);
        let lines: Vec<&str> = hba.lines().skip(1).collect();
        assert_eq!(
            lines,
            vec![
                "host pgbouncer adm 0.0.0.0/0 scram-sha-256",
                "host pgbouncer adm ::/0 scram-sha-256",
                "host all adm 0.0.0.0/0 reject",
                "host all lookup 0.0.0.0/0 reject",
                "host pgbouncer all 0.0.0.0/0 reject",
                "host all adm ::/0 reject",
                "host all lookup ::/0 reject",
                "host pgbouncer all ::/0 reject",
                "host all all 0.0.0.0/0 scram-sha-256",
                "host all all ::/0 scram-sha-256",
            ]
        );
        let tls = render_hba(&name("adm"), &name("lookup"), true);
        assert!(
            tls.contains("\nhostssl all all 0.0.0.0/0 scram-sha-256\n"),
            "{tls}"
        );
        assert!(!tls.contains("\nhost all all"), "{tls}");
        assert!(
            tls.contains("\nhost pgbouncer adm 0.0.0.0/0 scram-sha-256\n"),
            "{tls}"
        );
    }

    #[test]
    fn userlist_is_sorted_and_quoted() {
        let list = render_userlist(&[
            (
                name("z"),
                AuthSecret::new("p", "SCRAM-SHA-256$4096:c2FsdA==$a:b").unwrap(),
            ),
            (name("a"), AuthSecret::new("p", "plain").unwrap()),
        ]);
        assert_eq!(
            list,
            "\"a\" \"plain\"\n\"z\" \"SCRAM-SHA-256$4096:c2FsdA==$a:b\"\n"
        );
    }
}
