//! `ConnectionPool`: one pool of its service's PgBouncer, and a Secret pointing clients at it.
//!
//! Per pool: the admission rules again, then whose names it uses — `databaseName` must be a
//! database of the pool's namespace (or one the service shares), `username` a role of a
//! ServiceUser of the namespace, whose credentials then go into the pool Secret. A pool without
//! `username` gets a Secret without credentials (`USER` and `PASSWORD` empty, a
//! `DATABASE_URI` without user): clients bring their own, and the connector's administrator
//! never leaves dbward's namespace. The PgBouncer side (files, lookup role and function) is
//! [`super::pooler`]'s.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use crate::api::connection_pool::{SECRET_KEYS, SECRET_PREFIX};
use crate::api::{ConnectionPool, DatabaseService};
use crate::pgbouncer::config::{Name, PoolEntry};
use crate::sql;

use super::context::ServiceHandle;
use super::guard;
use super::secret::{self, Target};
use super::service_user::owner_reference;
use super::{Cluster, Context, Error};

/// The label on every object of a service's pooler and on its pools' Secrets: the
/// DatabaseService's name.
pub const POOLER_LABEL: &str = "dbward.dev/pooler";

/// A pool that passed every check: its `[databases]` entry and the credentials its Secret
/// carries.
#[derive(Clone, PartialEq)]
pub struct Accepted {
    /// The `[databases]` entry.
    pub entry: PoolEntry,
    /// `username` and that ServiceUser's password; `None` without `username`.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("entry", &self.entry)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .finish()
    }
}

/// Where clients reach the pooler, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host clients connect to (the Service's DNS name, or the local listen address).
    pub host: String,
    /// Port.
    pub port: u16,
    /// `SSLMODE` clients should use: `require` when the pooler has TLS, else `disable`.
    pub sslmode: String,
    /// The CA clients should trust (PEM), when known.
    pub ca_cert: String,
}

/// The pool's name in PgBouncer (what clients give as database name): `metadata.name`.
pub fn pool_name(pool: &ConnectionPool) -> String {
    pool.metadata.name.clone().unwrap_or_default()
}

/// Where the pool Secret goes; `None` when `connInfoSecretTargetDisabled`.
pub fn target(pool: &ConnectionPool, service: &str) -> Option<Target> {
    let mut target = Target::resolve(
        &pool.spec.secret,
        pool.metadata.namespace.as_deref().unwrap_or_default(),
        pool.metadata.name.as_deref().unwrap_or_default(),
        SECRET_PREFIX,
    )?;
    target
        .labels
        .insert(POOLER_LABEL.to_owned(), service.to_owned());
    Some(target)
}

/// Pure: the pool Secret, exactly [`SECRET_KEYS`] after the prefix.
pub fn pool_secret(
    pool: &ConnectionPool,
    target: &Target,
    endpoint: &Endpoint,
    credentials: Option<&(String, String)>,
) -> Secret {
    let name = pool_name(pool);
    let (user, password) = credentials
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .unwrap_or(("", ""));
    let values = SECRET_KEYS.map(|key| {
        let value = match key {
            "NAME" | "DATABASE" => name.clone(),
            "HOST" => endpoint.host.clone(),
            "PORT" => endpoint.port.to_string(),
            "USER" => user.to_owned(),
            "PASSWORD" => password.to_owned(),
            "SSLMODE" => endpoint.sslmode.clone(),
            "DATABASE_URI" => uri(endpoint, credentials, &name),
            "CA_CERT" => endpoint.ca_cert.clone(),
            _ => String::new(),
        };
        (key, value)
    });
    target.build(&values, owner_reference(pool).as_ref())
}

/// `postgres://[user:password@]host:port/pool?sslmode=…`.
fn uri(endpoint: &Endpoint, credentials: Option<&(String, String)>, pool: &str) -> String {
    let info = sql::ConnectionInfo {
        engine: sql::Engine::Postgres,
        host: endpoint.host.clone(),
        port: endpoint.port,
        user: String::new(),
        password: String::new(),
        sslmode: Some(endpoint.sslmode.clone()),
        ca_cert: None,
    };
    match credentials {
        Some((user, password)) => secret::database_uri(&info, user, password, pool),
        None => {
            let with_user = secret::database_uri(&info, "u", "p", pool);
            // The same URI without its user-info part.
            with_user.replacen("u:p@", "", 1)
        }
    }
}

/// Admission again, then ownership: the pool's database and user must be its namespace's.
/// Returns the pool's entry and credentials.
pub async fn check<C: Cluster>(
    ctx: &Context<C>,
    service: &DatabaseService,
    handle: &ServiceHandle,
    pool: &ConnectionPool,
) -> Result<Accepted, Error> {
    guard::admit(ctx, service, handle, pool).await?;
    let namespace = pool.metadata.namespace.clone().unwrap_or_default();
    let service_name = service.metadata.name.clone().unwrap_or_default();
    let database = pool.spec.database_name.as_str();
    let observed = handle.server.observe_database(database).await?;
    let owned = sql::owned_by_namespace(
        observed.as_ref().and_then(|d| d.marker.as_ref()),
        &namespace,
    );
    let shared = observed.is_some()
        && service
            .spec
            .shared_databases
            .iter()
            .any(|s| s.name == database);
    if !owned && !shared {
        return Err(Error::NotOwned {
            field: "spec.databaseName".to_owned(),
            what: "database",
            name: database.to_owned(),
            reason: format!(
                "is not a database of this namespace's Database or DatabaseClaim objects, nor shared by DatabaseService {service_name:?}"
            ),
        });
    }
    let credentials = match &pool.spec.username {
        Some(username) => Some(credentials(ctx, handle, &namespace, username).await?),
        None => None,
    };
    let invalid = |e: crate::pgbouncer::config::RenderError| Error::Invalid {
        message: e.to_string(),
    };
    Ok(Accepted {
        entry: PoolEntry {
            name: Name::new("metadata.name", &pool_name(pool)).map_err(invalid)?,
            dbname: Name::new("spec.databaseName", database).map_err(invalid)?,
            mode: pool.spec.pool_mode,
            size: u32::try_from(pool.spec.pool_size.max(1)).unwrap_or(1),
        },
        credentials,
    })
}

/// The ServiceUser behind `username` (the role's marker names it) and its password, from its
/// own Secret.
async fn credentials<C: Cluster>(
    ctx: &Context<C>,
    handle: &ServiceHandle,
    namespace: &str,
    username: &str,
) -> Result<(String, String), Error> {
    const FIELD: &str = "spec.username";
    let role = handle.server.observe_role(username, None).await?;
    let marker = role.as_ref().and_then(|r| r.marker.clone());
    let owner = marker
        .filter(|m| m.namespace == namespace && m.kind == "ServiceUser")
        .ok_or_else(|| Error::NotOwned {
            field: FIELD.to_owned(),
            what: "role",
            name: username.to_owned(),
            reason: "is not the role of a ServiceUser of this namespace (or does not exist yet)"
                .to_owned(),
        })?;
    let not_ready = |message: String| Error::UserNotReady {
        field: FIELD.to_owned(),
        message,
    };
    let user = ctx
        .cluster
        .get_service_user(namespace, &owner.name)
        .await?
        .ok_or_else(|| not_ready(format!("ServiceUser {namespace}/{} not found", owner.name)))?;
    let target = super::service_user::target(&user).ok_or_else(|| {
        not_ready(format!(
            "ServiceUser {namespace}/{} writes no Secret (connInfoSecretTargetDisabled), so its password cannot be given to the pool's clients",
            owner.name
        ))
    })?;
    let secret = ctx
        .cluster
        .get_secret(&target.namespace, &target.name)
        .await?;
    let password = target.stored_password(secret.as_ref()).ok_or_else(|| {
        not_ready(format!(
            "the Secret {}/{} of ServiceUser {} has no {}PASSWORD yet",
            target.namespace, target.name, owner.name, target.prefix
        ))
    })?;
    Ok((username.to_owned(), password))
}

/// Pure: which pools keep their name when two namespaces use the same one on a service: the
/// oldest (by creation, then namespace). Returns, per (namespace, name), whether it may have
/// the name.
pub fn first_come(pools: &[ConnectionPool]) -> BTreeMap<(String, String), bool> {
    let mut sorted: Vec<&ConnectionPool> = pools.iter().collect();
    sorted.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.namespace.clone(),
            p.metadata.name.clone(),
        )
    });
    let mut taken = std::collections::BTreeSet::new();
    sorted
        .into_iter()
        .map(|p| {
            let key = (
                p.metadata.namespace.clone().unwrap_or_default(),
                pool_name(p),
            );
            let free = taken.insert(pool_name(p));
            (key, free)
        })
        .collect()
}

/// A pool's name is used by an older pool of another namespace on the same service.
pub fn name_taken(pool: &ConnectionPool, service: &str) -> Error {
    Error::NameTaken {
        what: "pool",
        name: pool_name(pool),
        service: service.to_owned(),
        kind: "ConnectionPool".to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{ConnectionPoolSpec, PoolMode, SecretTarget, ServiceBinding};

    /// A pool of namespace `ns` on service `svc`, database `orders`.
    pub(crate) fn pool(ns: &str, name: &str, username: Option<&str>) -> ConnectionPool {
        let mut p = ConnectionPool::new(
            name,
            ConnectionPoolSpec {
                binding: ServiceBinding {
                    project: "p".into(),
                    service_name: "svc".into(),
                    auth_secret_ref: None,
                },
                secret: SecretTarget::default(),
                database_name: "orders".into(),
                username: username.map(str::to_owned),
                pool_mode: PoolMode::Transaction,
                pool_size: 5,
            },
        );
        p.metadata.namespace = Some(ns.into());
        p.metadata.uid = Some("uid-p".into());
        p
    }

    fn endpoint() -> Endpoint {
        Endpoint {
            host: "svc-pooler.dbward-system.svc".into(),
            port: 5432,
            sslmode: "disable".into(),
            ca_cert: String::new(),
        }
    }

    #[test]
    fn the_secret_has_exactly_the_aiven_keys() {
        let p = pool("team-a", "web", Some("app"));
        let t = target(&p, "svc").unwrap();
        let creds = ("app".to_owned(), "p@ss".to_owned());
        let s = pool_secret(&p, &t, &endpoint(), Some(&creds));
        let data = secret::decoded_data(&s);
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        let mut want: Vec<String> = SECRET_KEYS
            .iter()
            .map(|k| format!("CONNECTIONPOOL_{k}"))
            .collect();
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(data["CONNECTIONPOOL_NAME"], "web");
        assert_eq!(data["CONNECTIONPOOL_DATABASE"], "web");
        assert_eq!(data["CONNECTIONPOOL_USER"], "app");
        assert_eq!(
            data["CONNECTIONPOOL_DATABASE_URI"],
            "postgres://app:p%40ss@svc-pooler.dbward-system.svc:5432/web?sslmode=disable"
        );
        let labels = s.metadata.labels.clone().unwrap();
        assert_eq!(labels[POOLER_LABEL], "svc");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "dbward");
        let owner = &s.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ConnectionPool", "uid-p")
        );
    }

    #[test]
    fn a_pool_without_username_gets_no_credentials() {
        let p = pool("team-a", "web", None);
        let t = target(&p, "svc").unwrap();
        let data = secret::decoded_data(&pool_secret(&p, &t, &endpoint(), None));
        assert_eq!(data["CONNECTIONPOOL_USER"], "");
        assert_eq!(data["CONNECTIONPOOL_PASSWORD"], "");
        assert_eq!(
            data["CONNECTIONPOOL_DATABASE_URI"],
            "postgres://svc-pooler.dbward-system.svc:5432/web?sslmode=disable"
        );
    }

    #[test]
    fn the_oldest_pool_keeps_a_shared_name() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut old = pool("b", "web", None);
        old.metadata.creation_timestamp = Some(Time("2024-01-01T00:00:00Z".parse().unwrap()));
        let mut new = pool("a", "web", None);
        new.metadata.creation_timestamp = Some(Time("2025-01-01T00:00:00Z".parse().unwrap()));
        let other = pool("a", "batch", None);
        let free = first_come(&[new, old, other]);
        assert!(free[&("b".into(), "web".into())]);
        assert!(!free[&("a".into(), "web".into())]);
        assert!(free[&("a".into(), "batch".into())]);
    }
}
