//! The PgBouncer of a DatabaseService with ConnectionPools: on the server, a low-privilege
//! lookup role and the `auth_query` function in every pooled database; PgBouncer's three files
//! (`pgbouncer.ini`, `hba.conf`, the auth file); an auth Secret in dbward's namespace; and a
//! Secret per pool. [`realise`] observes, checks and applies the server side and returns the
//! rest as data; `dbward reconcile --local` writes it to files, the cluster controller to a Deployment, Service, ConfigMap and Secret. [`remove`] takes
//! the server side away with the last pool.
//!
//! The role's marker is the DatabaseService's (in dbward's namespace), so no tenant object can
//! take it over, and a role of that name that dbward did not create is never touched.
//!
//! Clients log in with their own credentials: PgBouncer asks the lookup function for the
//! role's SCRAM verifier, checks the client against it and logs in to the server with the
//! client's SCRAM keys. No application password is stored for PgBouncer; the auth file holds
//! only the lookup role's password and the admin user's SCRAM verifier.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::api::{ConnectionPool, DatabaseService};
use crate::pgbouncer::config::{
    self, AuthSecret, ClientTls, FilePath, Host, Name, PoolEntry, RenderError, ServerTarget,
    Settings, TlsMode,
};
use crate::pgbouncer::lookup;
use crate::sql::{self, OwnerMarker, Password, RoleFlag, RoleSpec, SqlAction};

use super::connection_pool::{self, Accepted, Endpoint, POOLER_LABEL};
use super::context::ServiceHandle;
use super::guard::{self, Wanted};
use super::service_user::owner_reference;
use super::{Cluster, Context, Error, MANAGED_BY};

/// The admin-console user: it exists only in PgBouncer's auth file (never a server role).
pub const ADMIN_USER: &str = "dbward_pgbouncer_admin";
/// Prefix of the lookup role's name (`auth_user`), followed by the service's name.
pub const LOOKUP_PREFIX: &str = "dbward_pgbouncer_";
/// File names.
pub const INI_FILE: &str = "pgbouncer.ini";
/// See [`INI_FILE`].
pub const HBA_FILE: &str = "hba.conf";
/// See [`INI_FILE`].
pub const AUTH_FILE: &str = "userlist.txt";
/// The connector's CA, for `server_tls_ca_file`.
pub const SERVER_CA_FILE: &str = "server-ca.crt";
/// Auth Secret key of the admin user's password (dbward's own, for the console).
pub const ADMIN_PASSWORD_KEY: &str = "admin-password";
/// Auth Secret key of the lookup role's password.
pub const LOOKUP_PASSWORD_KEY: &str = "lookup-password";

/// `prefix` + `name` + `suffix` within `max` bytes: when too long, `name` is cut and 8 hex
/// digits of its SHA-256 keep it unique.
pub(crate) fn bounded(prefix: &str, name: &str, suffix: &str, max: usize) -> String {
    let full = format!("{prefix}{name}{suffix}");
    if full.len() <= max {
        return full;
    }
    let hash = Sha256::digest(name.as_bytes());
    let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let keep = max - prefix.len() - suffix.len() - 9;
    let cut: String = name.chars().take(keep).collect();
    format!("{prefix}{}-{hex}{suffix}", cut.trim_end_matches('-'))
}

/// The lookup role of `service` (at most 63 bytes).
pub fn lookup_role(service: &str) -> String {
    bounded(LOOKUP_PREFIX, &service.replace('-', "_"), "", 63).replace('-', "_")
}

/// The name of the pooler's Deployment, Service, ConfigMap and auth Secret (a DNS label).
pub fn object_name(service: &str) -> String {
    bounded("", service, "-pooler", 63)
}

/// Where the files are, where PgBouncer listens and where clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `listen_addr`.
    pub listen_addr: String,
    /// `listen_port`.
    pub listen_port: u16,
    /// Directory of `pgbouncer.ini` and `hba.conf`.
    pub config_dir: String,
    /// Directory of the auth file and the connector's CA.
    pub auth_dir: String,
    /// Directory of the pooler's own `tls.crt`/`tls.key` (`ca.crt`), when it has TLS.
    pub tls_dir: Option<String>,
    /// The Secret mounted at `tls_dir` (in a cluster).
    pub tls_secret: Option<String>,
    /// Whether clients other than dbward's console must use TLS (`hostssl`).
    pub tls_required: bool,
    /// What the pool Secrets tell clients.
    pub endpoint: Endpoint,
}

/// The rendered files.
#[derive(Clone, PartialEq, Eq)]
pub struct Files {
    /// `pgbouncer.ini`.
    pub ini: String,
    /// `hba.conf`.
    pub hba: String,
    /// The auth file (secret: the lookup role's password).
    pub userlist: String,
    /// The connector's CA (PEM), when it has one.
    pub server_ca: Option<String>,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files")
            .field("ini", &self.ini)
            .field("hba", &self.hba)
            .field("userlist", &"<redacted>")
            .finish()
    }
}

/// A pool's outcome.
#[derive(Debug)]
pub struct PoolOutcome {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its Secret (`None` when `connInfoSecretTargetDisabled`), or why it is not served.
    pub result: Result<Option<Box<Secret>>, Error>,
}

/// What [`realise`] decided and did on the server.
#[derive(Debug)]
pub struct Realised {
    /// The files.
    pub files: Files,
    /// The auth Secret in dbward's namespace (auth file, passwords, the connector's CA).
    pub auth_secret: Secret,
    /// The pools PgBouncer serves.
    pub entries: Vec<PoolEntry>,
    /// Every pool's outcome.
    pub pools: Vec<PoolOutcome>,
    /// What only a restart changes ([`config::restart_settings`]).
    pub restart: String,
    /// The Secret with the pooler's certificate, to mount ([`Layout::tls_secret`]).
    pub tls_secret: Option<String>,
    /// The admin user's password, for the console.
    pub admin_password: String,
    /// The server-side changes made, one line each (no secrets).
    pub changes: Vec<String>,
}

/// The marker of the pooler's lookup role: the DatabaseService's, in dbward's namespace.
pub fn marker(service: &DatabaseService, operator_namespace: &str) -> OwnerMarker {
    OwnerMarker::new(
        operator_namespace,
        "DatabaseService",
        service.metadata.name.as_deref().unwrap_or_default(),
        service.metadata.uid.as_deref(),
    )
}

/// Observe → check → apply the server side of `service`'s pooler for `pools` (at least one),
/// and render the rest. A pool that fails its checks is left out (its outcome says why); the
/// others are served.
pub async fn realise<C: Cluster>(
    ctx: &Context<C>,
    service: &DatabaseService,
    pools: &[ConnectionPool],
    layout: &Layout,
) -> Result<Realised, Error> {
    let handle = ctx.server_for(service).await?;
    let svc = handle.name.clone();
    let auth_name = object_name(&svc);
    let existing = ctx
        .cluster
        .get_secret(&ctx.operator_namespace, &auth_name)
        .await?;
    let stored = existing
        .as_ref()
        .map(super::secret::decoded_data)
        .unwrap_or_default();
    let lookup_password = stored_or_new(&stored, LOOKUP_PASSWORD_KEY)?;
    let admin_password = stored_or_new(&stored, ADMIN_PASSWORD_KEY)?;

    let (mut accepted, mut pools_out) = check_pools(ctx, service, &handle, pools).await;
    let mut changes = ensure_lookup_role(ctx, service, &handle, &lookup_password).await?;
    changes.extend(ensure_functions(&handle, &mut accepted, &mut pools_out).await?);

    let entries: Vec<PoolEntry> = accepted.iter().map(|(_, a)| a.entry.clone()).collect();
    let settings = settings(&handle, layout, &svc, entries.clone())?;
    let admin_verifier = admin_verifier(stored.get(AUTH_FILE), &admin_password);
    let userlist = config::render_userlist(&[
        (
            settings.auth_user.clone(),
            secret("lookup password", &lookup_password)?,
        ),
        (
            settings.admin_user.clone(),
            secret("admin verifier", &admin_verifier)?,
        ),
    ]);
    let files = Files {
        ini: config::render_ini(&settings).map_err(invalid)?,
        hba: config::render_hba(
            &settings.admin_user,
            &settings.auth_user,
            layout.tls_dir.is_some() && layout.tls_required,
        ),
        userlist,
        server_ca: handle.info.ca_cert.clone(),
    };
    for (pool, accepted) in &accepted {
        let target = connection_pool::target(pool, &svc);
        let secret = target.map(|t| {
            Box::new(connection_pool::pool_secret(
                pool,
                &t,
                &layout.endpoint,
                accepted.credentials.as_ref(),
            ))
        });
        pools_out.push(outcome(pool, Ok(secret)));
    }
    pools_out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(Realised {
        auth_secret: auth_secret(
            service,
            &ctx.operator_namespace,
            &files,
            &lookup_password,
            &admin_password,
        ),
        restart: config::restart_settings(&settings),
        tls_secret: layout.tls_secret.clone(),
        files,
        entries,
        pools: pools_out,
        admin_password,
        changes,
    })
}

fn outcome(pool: &ConnectionPool, result: Result<Option<Box<Secret>>, Error>) -> PoolOutcome {
    PoolOutcome {
        namespace: pool.metadata.namespace.clone().unwrap_or_default(),
        name: connection_pool::pool_name(pool),
        result,
    }
}

fn invalid(e: RenderError) -> Error {
    Error::Invalid {
        message: e.to_string(),
    }
}

fn name(field: &str, value: &str) -> Result<Name, Error> {
    Name::new(field, value).map_err(invalid)
}

fn secret(field: &str, value: &str) -> Result<AuthSecret, Error> {
    AuthSecret::new(field, value).map_err(invalid)
}

fn stored_or_new(stored: &BTreeMap<String, String>, key: &str) -> Result<String, Error> {
    if let Some(value) = stored.get(key).filter(|v| !v.is_empty()) {
        return Ok(value.clone());
    }
    super::secret::generate_password().map_err(|e| Error::Invalid {
        message: format!("cannot generate a password: {e}"),
    })
}

/// The admin user's SCRAM verifier: the one in the stored auth file when it still matches the
/// password (a fresh one has a fresh salt, and would rewrite the file on every pass).
fn admin_verifier(stored_userlist: Option<&String>, password: &str) -> String {
    let prefix = format!("\"{ADMIN_USER}\" \"");
    let stored = stored_userlist.and_then(|list| {
        list.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix('"'))
    });
    match stored {
        Some(verifier)
            if sql::password::pg_verify(Some(verifier), password)
                == sql::PasswordState::Matches =>
        {
            verifier.to_owned()
        }
        _ => sql::password::pg_scram_verifier(password),
    }
}

/// Every pool's admission, name and ownership checks.
async fn check_pools<C: Cluster>(
    ctx: &Context<C>,
    service: &DatabaseService,
    handle: &ServiceHandle,
    pools: &[ConnectionPool],
) -> (Vec<(ConnectionPool, Accepted)>, Vec<PoolOutcome>) {
    let free = connection_pool::first_come(pools);
    let mut accepted = Vec::new();
    let mut failed = Vec::new();
    for pool in pools {
        let key = (
            pool.metadata.namespace.clone().unwrap_or_default(),
            connection_pool::pool_name(pool),
        );
        if !free.get(&key).copied().unwrap_or(false) {
            failed.push(outcome(
                pool,
                Err(connection_pool::name_taken(pool, &handle.name)),
            ));
            continue;
        }
        match connection_pool::check(ctx, service, handle, pool).await {
            Ok(a) => accepted.push((pool.clone(), a)),
            Err(e) => failed.push(outcome(pool, Err(e))),
        }
    }
    (accepted, failed)
}

/// The lookup role: a login role with nothing else, its password, the service's marker.
async fn ensure_lookup_role<C: Cluster>(
    ctx: &Context<C>,
    service: &DatabaseService,
    handle: &ServiceHandle,
    password: &str,
) -> Result<Vec<String>, Error> {
    let role = lookup_role(&handle.name);
    let marker = marker(service, &ctx.operator_namespace);
    let observed = handle.server.observe_role(&role, Some(password)).await?;
    guard::own_name(
        Wanted {
            what: "role",
            name: &role,
            service: &handle.name,
        },
        &marker,
        observed.as_ref().map(|r| r.marker.as_ref()),
        false,
    )?;
    let spec = RoleSpec {
        name: role,
        flags: BTreeSet::from([RoleFlag::Login]),
        in_roles: BTreeSet::new(),
        parameters: BTreeMap::new(),
        password: Some(Password::new(password)),
        marker: Some(marker),
    };
    let actions = sql::plan_role(sql::Engine::Postgres, &spec, observed.as_ref());
    handle.server.apply(&actions).await?;
    Ok(actions.iter().map(ToString::to_string).collect())
}

/// The lookup function in every pooled database: installed when missing, repaired when it
/// differs. A database whose schema of that name belongs to someone else keeps it, and its
/// pools are not served.
async fn ensure_functions(
    handle: &ServiceHandle,
    accepted: &mut Vec<(ConnectionPool, Accepted)>,
    failed: &mut Vec<PoolOutcome>,
) -> Result<Vec<String>, Error> {
    let role = lookup_role(&handle.name);
    let admin = handle.info.user.clone();
    let databases: BTreeSet<String> = accepted
        .iter()
        .map(|(_, a)| a.entry.dbname.to_string())
        .collect();
    let mut changes = Vec::new();
    let mut refused = BTreeSet::new();
    for db in &databases {
        let state = sql::pooler::observe_lookup(&handle.server, db, &role, &admin).await?;
        match state.needs_install() {
            Ok(false) => {}
            Ok(true) => {
                sql::pooler::install_lookup(&handle.server, db, &role, &admin).await?;
                changes.push(format!(
                    "install the pooler's lookup function {}.{} in database {db:?}",
                    lookup::SCHEMA,
                    lookup::FUNCTION
                ));
            }
            Err(_) => {
                refused.insert(db.clone());
            }
        }
    }
    accepted.retain(|(pool, a)| {
        if !refused.contains(a.entry.dbname.as_str()) {
            return true;
        }
        failed.push(outcome(
            pool,
            Err(Error::NameTaken {
                what: "schema",
                name: format!("{}.{}", a.entry.dbname, lookup::SCHEMA),
                service: handle.name.clone(),
                kind: "ConnectionPool".to_owned(),
            }),
        ));
        false
    });
    Ok(changes)
}

/// Pure (given the handle's connection details): the typed settings of `pgbouncer.ini`.
fn settings(
    handle: &ServiceHandle,
    layout: &Layout,
    service: &str,
    databases: Vec<PoolEntry>,
) -> Result<Settings, Error> {
    let path = |field: &str, dir: &str, file: &str| {
        FilePath::new(field, &format!("{}/{file}", dir.trim_end_matches('/'))).map_err(invalid)
    };
    let mode = sql::SslMode::parse(handle.info.sslmode.as_deref().unwrap_or("")).map_err(|e| {
        Error::Invalid {
            message: e.to_string(),
        }
    })?;
    let tls_mode = match mode {
        sql::SslMode::Disable => TlsMode::Disable,
        sql::SslMode::Prefer => TlsMode::Prefer,
        sql::SslMode::Require => TlsMode::Require,
        sql::SslMode::VerifyCa => TlsMode::VerifyCa,
        sql::SslMode::VerifyFull => TlsMode::VerifyFull,
    };
    let client_tls = match &layout.tls_dir {
        Some(dir) => Some(ClientTls {
            // `prefer` accepts TLS without demanding it at the protocol level; hba.conf then
            // demands it of every client (`hostssl`) but dbward's own console connection.
            mode: TlsMode::Prefer,
            cert_file: path("spec.pooler.tls", dir, "tls.crt")?,
            key_file: path("spec.pooler.tls", dir, "tls.key")?,
            ca_file: None,
        }),
        None => None,
    };
    Ok(Settings {
        listen_addr: Host::new("listen address", &layout.listen_addr).map_err(invalid)?,
        listen_port: layout.listen_port,
        hba_file: path("config directory", &layout.config_dir, HBA_FILE)?,
        auth_file: path("auth directory", &layout.auth_dir, AUTH_FILE)?,
        auth_user: name("auth_user", &lookup_role(service))?,
        auth_query: lookup::auth_query(),
        admin_user: name("admin_users", ADMIN_USER)?,
        max_client_conn: config::DEFAULT_MAX_CLIENT_CONN,
        server: ServerTarget {
            host: Host::new("connector endpoint", &handle.info.host).map_err(invalid)?,
            port: handle.info.port,
            tls_mode,
            ca_file: match handle.info.ca_cert {
                Some(_) => Some(path("auth directory", &layout.auth_dir, SERVER_CA_FILE)?),
                None => None,
            },
        },
        client_tls,
        databases,
    })
}

/// The auth Secret: the auth file, the two passwords dbward keeps, the connector's CA; owned
/// by the DatabaseService, in dbward's namespace.
pub fn auth_secret(
    service: &DatabaseService,
    operator_namespace: &str,
    files: &Files,
    lookup_password: &str,
    admin_password: &str,
) -> Secret {
    let svc = service.metadata.name.clone().unwrap_or_default();
    let mut data = BTreeMap::from([
        (AUTH_FILE.to_owned(), files.userlist.clone()),
        (LOOKUP_PASSWORD_KEY.to_owned(), lookup_password.to_owned()),
        (ADMIN_PASSWORD_KEY.to_owned(), admin_password.to_owned()),
    ]);
    if let Some(ca) = &files.server_ca {
        data.insert(SERVER_CA_FILE.to_owned(), ca.clone());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(object_name(&svc)),
            namespace: Some(operator_namespace.to_owned()),
            labels: Some(labels(&svc)),
            owner_references: owner_reference(service).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// The labels of every object of `service`'s pooler.
pub fn labels(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        (POOLER_LABEL.to_owned(), service.to_owned()),
        ("app.kubernetes.io/name".to_owned(), "pgbouncer".to_owned()),
    ])
}

/// Takes the server side of `service`'s pooler away (its last pool is gone): the lookup
/// function from every database where the lookup role holds something, then the role — only
/// when the role carries the service's marker. Returns the changes made.
pub async fn remove<C: Cluster>(
    ctx: &Context<C>,
    service: &DatabaseService,
) -> Result<Vec<String>, Error> {
    let handle = ctx.server_for(service).await?;
    let role = lookup_role(&handle.name);
    let Some(state) = handle.server.observe_role(&role, None).await? else {
        return Ok(Vec::new());
    };
    if !guard::may_drop(
        &marker(service, &ctx.operator_namespace),
        state.marker.as_ref(),
    ) {
        return Ok(Vec::new());
    }
    let mut changes = Vec::new();
    for db in sql::pooler::databases_of_role(&handle.server, &role).await? {
        if sql::pooler::uninstall_lookup(&handle.server, &db).await? {
            changes.push(format!(
                "remove the pooler's lookup function from database {db:?}"
            ));
        }
    }
    let drop = SqlAction::DropRole { name: role };
    handle.server.apply(std::slice::from_ref(&drop)).await?;
    changes.push(drop.to_string());
    Ok(changes)
}

/// A short hash of what only a restart changes, for the pod template's annotation.
pub fn restart_hash(restart: &str, extra: &str) -> String {
    let hash = Sha256::digest(format!("{restart}\n{extra}").as_bytes());
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poolers_roles_are_reserved_at_admission() {
        use crate::admission::tenancy::POOLER_RESERVED_PREFIX;
        assert!(ADMIN_USER.starts_with(POOLER_RESERVED_PREFIX));
        assert!(lookup_role("x").starts_with(POOLER_RESERVED_PREFIX));
    }

    #[test]
    fn derived_names_fit_and_stay_unique() {
        assert_eq!(lookup_role("my-pg"), "dbward_pgbouncer_my_pg");
        assert_eq!(object_name("my-pg"), "my-pg-pooler");
        let long = "a".repeat(63);
        let longer = format!("{}b", "a".repeat(62));
        for n in [lookup_role(&long), object_name(&long)] {
            assert!(n.len() <= 63, "{n}");
        }
        assert_ne!(lookup_role(&long), lookup_role(&longer));
        assert_ne!(object_name(&long), object_name(&longer));
        assert!(Name::new("x", &lookup_role(&long)).is_ok());
    }

    #[test]
    fn the_admin_verifier_is_kept_while_it_matches() {
        let first = admin_verifier(None, "pw");
        assert!(first.starts_with("SCRAM-SHA-256$"));
        let list = format!("\"{ADMIN_USER}\" \"{first}\"\n");
        assert_eq!(admin_verifier(Some(&list), "pw"), first);
        let other = admin_verifier(Some(&list), "pw2");
        assert_ne!(other, first);
        assert_eq!(
            sql::password::pg_verify(Some(&other), "pw2"),
            sql::PasswordState::Matches
        );
    }

    #[test]
    fn restart_hash_changes_only_with_its_input() {
        assert_eq!(restart_hash("a", "img"), restart_hash("a", "img"));
        assert_ne!(restart_hash("a", "img"), restart_hash("b", "img"));
        assert_eq!(restart_hash("a", "img").len(), 16);
    }
}
