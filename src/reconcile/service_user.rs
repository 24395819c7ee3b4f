//! `ServiceUser`: a role (PostgreSQL) or user account (MySQL), its flags, memberships,
//! parameters and privileges, and a Secret with its credentials.
//!
//! Observe (the target Secret, the password, the role and its privileges) → plan (pure: role,
//! privileges, Secret) → act. The password is `passwordSecretRef`'s when given, else the one
//! already in the target Secret, else a new one: restarting dbward never rotates passwords.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use tracing::instrument;

use crate::api::service_user::{SECRET_KEYS, SECRET_PREFIX};
use crate::api::{self, AdmissionPolicySpec, DatabaseService, ServiceUser};
use crate::sql::{
    self, ConnectionInfo, Engine, Password, PrivilegeLevel, PrivilegeSet, PrivilegeSpec, RoleSpec,
    RoleState,
};

use super::context::ServiceHandle;
use super::guard::{self, Wanted};
use super::secret::{self, Redacted, Target};
use super::{Action, Applied, Cluster, Context, Error, Pinned, Prepared, act, sql_engine};

/// The role's name on the server: the one pinned in `status`, else `spec.username`, default
/// `metadata.name`.
pub fn username(user: &ServiceUser) -> String {
    user.status
        .as_ref()
        .and_then(|s| s.username.clone())
        .unwrap_or_else(|| requested_username(user))
}

/// The name `spec` asks for: `spec.username`, default `metadata.name`.
fn requested_username(user: &ServiceUser) -> String {
    user.spec
        .username
        .clone()
        .unwrap_or_else(|| user.metadata.name.clone().unwrap_or_default())
}

/// Pure: a `spec.username` that differs from the pinned name (edited while the webhook was not
/// looking) is refused rather than followed.
pub fn check_pinned(user: &ServiceUser) -> Result<(), Error> {
    let (pinned, requested) = (username(user), requested_username(user));
    guard::check_pinned(user, "spec.username", "role", &pinned, &requested)
}

/// Where the credentials go; `None` when `connInfoSecretTargetDisabled`.
pub fn target(user: &ServiceUser) -> Option<Target> {
    Target::resolve(
        &user.spec.secret,
        user.metadata.namespace.as_deref().unwrap_or_default(),
        user.metadata.name.as_deref().unwrap_or_default(),
        SECRET_PREFIX,
    )
}

/// The desired role, without its password.
pub fn role_spec(user: &ServiceUser) -> RoleSpec {
    RoleSpec {
        name: username(user),
        flags: user.spec.flags.iter().map(|f| sql_flag(*f)).collect(),
        in_roles: user.spec.in_roles.iter().cloned().collect::<BTreeSet<_>>(),
        parameters: user.spec.parameters.clone(),
        password: None,
        marker: Some(guard::marker_of(user)),
    }
}

/// The desired privileges.
pub fn privilege_specs(user: &ServiceUser) -> Vec<PrivilegeSpec> {
    user.spec
        .privileges
        .iter()
        .map(|p| PrivilegeSpec {
            database: p.database.clone(),
            level: match p.level {
                api::service_user::PrivilegeLevel::ReadOnly => PrivilegeLevel::ReadOnly,
                api::service_user::PrivilegeLevel::ReadWrite => PrivilegeLevel::ReadWrite,
                api::service_user::PrivilegeLevel::Owner => PrivilegeLevel::Owner,
            },
        })
        .collect()
}

fn sql_flag(flag: api::RoleFlag) -> sql::RoleFlag {
    match flag {
        api::RoleFlag::Superuser => sql::RoleFlag::Superuser,
        api::RoleFlag::Inherit => sql::RoleFlag::Inherit,
        api::RoleFlag::Login => sql::RoleFlag::Login,
        api::RoleFlag::Nologin => sql::RoleFlag::Nologin,
        api::RoleFlag::Createrole => sql::RoleFlag::Createrole,
        api::RoleFlag::Createdb => sql::RoleFlag::Createdb,
        api::RoleFlag::Replication => sql::RoleFlag::Replication,
        api::RoleFlag::Bypassrls => sql::RoleFlag::Bypassrls,
    }
}

/// The credentials Secret: exactly [`SECRET_KEYS`] after the prefix.
pub fn credentials_secret(
    target: &Target,
    info: &ConnectionInfo,
    username: &str,
    password: &str,
    database: &str,
    owner: Option<&OwnerReference>,
) -> Secret {
    let values = SECRET_KEYS.map(|key| {
        let value = match key {
            "HOST" => info.host.clone(),
            "PORT" => info.port.to_string(),
            "USERNAME" => username.to_owned(),
            "PASSWORD" => password.to_owned(),
            "DATABASE_URI" => secret::database_uri(info, username, password, database),
            "SSLMODE" => secret::sslmode(info),
            "CA_CERT" => info.ca_cert.clone().unwrap_or_default(),
            _ => String::new(),
        };
        (key, value)
    });
    target.build(&values, owner)
}

/// The database a user's `DATABASE_URI` points at: its first privilege's, else the engine's
/// default (`postgres` on PostgreSQL, none on MySQL).
pub fn uri_database(user: &ServiceUser, engine: Engine) -> String {
    user.spec
        .privileges
        .first()
        .map(|p| p.database.clone())
        .unwrap_or_else(|| match engine {
            Engine::Postgres => "postgres".to_owned(),
            Engine::Mysql => String::new(),
        })
}

/// Everything the plan compares against (its `Debug` hides the Secret's values).
#[derive(Clone, Default)]
pub struct Observed {
    /// The role, `None` when missing.
    pub role: Option<RoleState>,
    /// Its privileges by database.
    pub privileges: BTreeMap<String, PrivilegeSet>,
    /// The target Secret as it is.
    pub secret: Option<Secret>,
    /// The roles of `inRoles` that exist, for their ownership markers.
    pub groups: BTreeMap<String, RoleState>,
    /// The databases of `privileges` that exist, for their ownership markers.
    pub databases: BTreeMap<String, sql::DatabaseState>,
}

/// Everything the plan aims for (its `Debug` hides the Secret's values).
#[derive(Clone)]
pub struct Desired {
    /// The role, with the password to hold (`None`: leave it alone).
    pub role: RoleSpec,
    /// Its privileges.
    pub privileges: Vec<PrivilegeSpec>,
    /// The credentials Secret, `None` when disabled.
    pub secret: Option<Secret>,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("role", &self.role)
            .field("privileges", &self.privileges)
            .field("secret", &self.secret.as_ref().map(Redacted))
            .field("groups", &self.groups)
            .field("databases", &self.databases)
            .finish()
    }
}

impl std::fmt::Debug for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desired")
            .field("role", &self.role)
            .field("privileges", &self.privileges)
            .field("secret", &self.secret.as_ref().map(Redacted))
            .finish()
    }
}

/// Pure: role, then privileges, then the Secret (applied only when it differs).
pub fn plan(engine: Engine, desired: &Desired, observed: &Observed) -> Vec<Action> {
    let mut actions: Vec<Action> = sql::plan_role(engine, &desired.role, observed.role.as_ref())
        .into_iter()
        .map(Action::Sql)
        .collect();
    actions.extend(
        sql::plan_privileges(
            engine,
            &desired.role.name,
            &desired.privileges,
            &observed.privileges,
        )
        .into_iter()
        .map(Action::Sql),
    );
    actions.extend(secret_action(
        desired.secret.as_ref(),
        observed.secret.as_ref(),
    ));
    actions
}

/// Applies `desired` unless `existing` already holds it.
pub fn secret_action(desired: Option<&Secret>, existing: Option<&Secret>) -> Option<Action> {
    let desired = desired?;
    match existing {
        Some(e) if secret::up_to_date(e, desired) => None,
        _ => Some(Action::ApplySecret(Box::new(desired.clone()))),
    }
}

/// The password to hold: `passwordSecretRef`'s, else the target Secret's, else a new one
/// (`None` when there is nowhere to keep a generated one).
pub async fn resolve_password<C: Cluster>(
    cluster: &C,
    namespace: &str,
    reference: Option<&api::SecretKeyRef>,
    target: Option<&Target>,
    existing: Option<&Secret>,
) -> Result<Option<Password>, Error> {
    if let Some(reference) = reference {
        let missing = || Error::PasswordSecretMissing {
            namespace: namespace.to_owned(),
            name: reference.name.clone(),
            key: reference.key.clone(),
        };
        let secret = cluster
            .get_secret(namespace, &reference.name)
            .await?
            .ok_or_else(missing)?;
        let password = secret::decoded_data(&secret)
            .remove(&reference.key)
            .filter(|p| !p.is_empty())
            .ok_or_else(missing)?;
        return Ok(Some(Password::new(password)));
    }
    let Some(target) = target else {
        return Ok(None);
    };
    if let Some(stored) = target.stored_password(existing) {
        return Ok(Some(Password::new(stored)));
    }
    let generated = secret::generate_password().map_err(|e| Error::Invalid {
        message: format!("cannot generate a password: {e}"),
    })?;
    Ok(Some(Password::new(generated)))
}

/// The owner reference a Secret gets (controller, so the garbage collector removes it with the
/// object); `None` for an object that has no UID (local mode).
pub fn owner_reference<K: Resource<DynamicType = ()>>(object: &K) -> Option<OwnerReference> {
    object.meta().uid.as_ref()?;
    object.controller_owner_ref(&())
}

/// Observe → check → plan → act.
pub async fn reconcile<C: Cluster>(ctx: &Context<C>, user: &ServiceUser) -> Result<Applied, Error> {
    prepare(ctx, user).await?.run(&ctx.cluster).await
}

/// Observe, check (admission again, then ownership on the server) and plan, writing nothing.
#[instrument(skip_all, fields(kind = "ServiceUser", namespace = user.metadata.namespace.as_deref(), name = user.metadata.name.as_deref()))]
pub async fn prepare<C: Cluster>(ctx: &Context<C>, user: &ServiceUser) -> Result<Prepared, Error> {
    let (service, handle) = ctx.service(&user.spec.binding.service_name).await?;
    let policy = guard::admit(ctx, &service, &handle, user).await?;
    check_pinned(user)?;
    let engine = sql_engine(service.spec.engine);
    let (desired, observed) = observe(ctx, user, &handle, engine).await?;
    authorize(user, &service, &policy, &desired, &observed)?;
    Ok(Prepared {
        server: handle.server.clone(),
        actions: plan(engine, &desired, &observed),
        warnings: Vec::new(),
        pinned: Pinned {
            database: None,
            user: Some(desired.role.name.clone()),
        },
        pending: None,
    })
}

/// Pure: whose role, memberships and databases these are. The role must be free, this object's
/// or adoptable; every `inRoles` role must belong to the namespace (or be allowed by the
/// policy); every privilege must be on a database of the namespace, or on one the service
/// shares up to that level.
pub fn authorize(
    user: &ServiceUser,
    service: &DatabaseService,
    policy: &AdmissionPolicySpec,
    desired: &Desired,
    observed: &Observed,
) -> Result<(), Error> {
    let namespace = user.metadata.namespace.as_deref().unwrap_or_default();
    let service_name = service.metadata.name.as_deref().unwrap_or_default();
    let name = desired.role.name.as_str();
    let marker = guard::marker_of(user);
    guard::own_name(
        Wanted {
            what: "role",
            name,
            service: service_name,
        },
        &marker,
        observed.role.as_ref().map(|r| r.marker.as_ref()),
        policy.adopts_role(service_name, namespace, name),
    )?;
    guard::check_memberships(&desired.role.in_roles, &observed.groups, namespace, policy)?;
    for (i, privilege) in desired.privileges.iter().enumerate() {
        let database = privilege.database.as_str();
        let owned = sql::owned_by_namespace(
            observed
                .databases
                .get(database)
                .and_then(|d| d.marker.as_ref()),
            namespace,
        );
        let shared = service
            .spec
            .shared_databases
            .iter()
            .any(|s| s.name == database && privilege.level <= s.max_level);
        if !owned && !shared {
            return Err(Error::NotOwned {
                field: format!("spec.privileges[{i}].database"),
                what: "database",
                name: database.to_owned(),
                reason: format!(
                    "is not a database of this namespace's Database or DatabaseClaim objects, nor shared by DatabaseService {service_name:?} at level {}",
                    privilege.level.as_str()
                ),
            });
        }
    }
    Ok(())
}

/// Reads the Kubernetes side and the server, and builds the desired state from them (the
/// password depends on what the target Secret holds).
pub async fn observe<C: Cluster>(
    ctx: &Context<C>,
    user: &ServiceUser,
    handle: &ServiceHandle,
    engine: Engine,
) -> Result<(Desired, Observed), Error> {
    let namespace = user.metadata.namespace.clone().unwrap_or_default();
    let target = target(user);
    let existing = match &target {
        Some(t) => ctx.cluster.get_secret(&t.namespace, &t.name).await?,
        None => None,
    };
    let password = resolve_password(
        &ctx.cluster,
        &namespace,
        user.spec.password_secret_ref.as_ref(),
        target.as_ref(),
        existing.as_ref(),
    )
    .await?;
    let mut role = role_spec(user);
    let role_state = handle
        .server
        .observe_role(&role.name, password.as_ref().map(Password::expose))
        .await?;
    let privileges = privilege_specs(user);
    let databases: Vec<&str> = privileges.iter().map(|p| p.database.as_str()).collect();
    let mut held = handle
        .server
        .observe_privileges(&[role.name.as_str()], &databases)
        .await?;
    let groups: Vec<(&str, Option<&str>)> =
        role.in_roles.iter().map(|g| (g.as_str(), None)).collect();
    let groups = if groups.is_empty() {
        BTreeMap::new()
    } else {
        handle.server.observe_roles(&groups).await?
    };
    let databases = if databases.is_empty() {
        BTreeMap::new()
    } else {
        handle.server.observe_databases(&databases).await?
    };
    let secret = match (&target, &password) {
        (Some(t), Some(p)) => Some(credentials_secret(
            t,
            &handle.info,
            &role.name,
            p.expose(),
            &uri_database(user, engine),
            owner_reference(user).as_ref(),
        )),
        _ => None,
    };
    // A RotateCredentials request between its two writes: the server already holds the staged
    // password, the Secret still the old one, which the rotation overwrites next. Setting the
    // old one again here would undo the rotation; leave the password alone.
    let rotating = user.spec.password_secret_ref.is_none()
        && role_state
            .as_ref()
            .is_some_and(|r| r.password == sql::PasswordState::Differs)
        && super::ops_request::rotation_in_flight(ctx, user, &handle.server, &role.name).await?;
    role.password = if rotating { None } else { password };
    let observed = Observed {
        privileges: held.remove(&role.name).unwrap_or_default(),
        role: role_state,
        secret: existing,
        groups,
        databases,
    };
    Ok((
        Desired {
            role,
            privileges,
            secret,
        },
        observed,
    ))
}

/// Drops the role (its grants go with it). A DatabaseService that no longer exists leaves
/// nothing to drop.
#[instrument(skip_all, fields(kind = "ServiceUser", namespace = user.metadata.namespace.as_deref(), name = user.metadata.name.as_deref()))]
pub async fn cleanup<C: Cluster>(ctx: &Context<C>, user: &ServiceUser) -> Result<Applied, Error> {
    let handle = match ctx.service(&user.spec.binding.service_name).await {
        Ok((_, handle)) => handle,
        Err(Error::ServiceNotFound { name }) => {
            return Ok(Applied {
                actions: Vec::new(),
                warnings: vec![format!("DatabaseService {name:?} is gone; nothing to drop")],
            });
        }
        Err(e) => return Err(e),
    };
    let name = username(user);
    let Some(role) = handle.server.observe_role(&name, None).await? else {
        return Ok(Applied::default());
    };
    if !guard::may_drop(&guard::marker_of(user), role.marker.as_ref()) {
        return Ok(Applied {
            actions: Vec::new(),
            warnings: vec![format!(
                "role {name:?} kept: it does not belong to this ServiceUser"
            )],
        });
    }
    let actions = vec![Action::Sql(sql::SqlAction::DropRole { name })];
    act(&handle.server, &ctx.cluster, &actions).await?;
    Ok(Applied {
        actions,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ConnInfoSecretTarget, SecretTarget, ServiceBinding, ServiceUserSpec};
    use crate::sql::{Attribute, PasswordState, SqlAction};

    fn info() -> ConnectionInfo {
        ConnectionInfo {
            engine: Engine::Postgres,
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
            password: "admin-secret".into(),
            sslmode: None,
            ca_cert: None,
        }
    }

    fn user() -> ServiceUser {
        let mut u = ServiceUser::new(
            "app",
            ServiceUserSpec {
                binding: ServiceBinding {
                    project: "p".into(),
                    service_name: "svc".into(),
                    auth_secret_ref: None,
                },
                secret: SecretTarget {
                    conn_info_secret_target: Some(ConnInfoSecretTarget {
                        name: Some("app-db".into()),
                        labels: Some(BTreeMap::from([("team".into(), "a".into())])),
                        annotations: None,
                        prefix: None,
                    }),
                    conn_info_secret_target_disabled: None,
                },
                username: Some("app_user".into()),
                flags: vec![api::RoleFlag::Createdb],
                in_roles: vec![],
                parameters: BTreeMap::new(),
                privileges: vec![api::service_user::Privilege {
                    database: "orders".into(),
                    level: api::service_user::PrivilegeLevel::ReadWrite,
                }],
                password_secret_ref: None,
            },
        );
        u.metadata.namespace = Some("team-a".into());
        u.metadata.uid = Some("uid-1".into());
        u
    }

    fn desired(u: &ServiceUser, password: &str) -> Desired {
        let t = target(u).unwrap();
        let mut role = role_spec(u);
        role.password = Some(Password::new(password));
        Desired {
            secret: Some(credentials_secret(
                &t,
                &info(),
                &role.name,
                password,
                &uri_database(u, Engine::Postgres),
                owner_reference(u).as_ref(),
            )),
            role,
            privileges: privilege_specs(u),
        }
    }

    #[test]
    fn secret_has_exactly_the_keys_labels_and_owner() {
        let d = desired(&user(), "pw");
        let s = d.secret.unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("app-db"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("team-a"));
        let keys: Vec<&String> = s.data.as_ref().unwrap().keys().collect();
        let mut want: Vec<String> = SECRET_KEYS
            .iter()
            .map(|k| format!("SERVICEUSER_{k}"))
            .collect();
        want.sort();
        assert_eq!(keys, want.iter().collect::<Vec<_>>());
        let data = secret::decoded_data(&s);
        assert_eq!(
            data["SERVICEUSER_DATABASE_URI"],
            "postgres://app_user:pw@127.0.0.1:5432/orders?sslmode=prefer"
        );
        assert!(!data.values().any(|v| v.contains("admin-secret")));
        assert_eq!(s.metadata.labels.unwrap()["team"], "a");
        let owner = &s.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ServiceUser", "uid-1", Some(true))
        );
    }

    #[test]
    fn new_user_gets_role_grants_and_secret_then_nothing() {
        let u = user();
        let d = desired(&u, "pw");
        let actions = plan(Engine::Postgres, &d, &Observed::default());
        assert!(matches!(
            actions.first(),
            Some(Action::Sql(SqlAction::CreateRole { .. }))
        ));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Sql(SqlAction::GrantPrivileges { .. })))
        );
        assert!(matches!(actions.last(), Some(Action::ApplySecret(_))));

        // Converged: the role as desired, the grants held, the Secret in place.
        let mut privileges = BTreeMap::new();
        let mut set = PrivilegeSet::default();
        for p in sql::required_privileges(Engine::Postgres, PrivilegeLevel::ReadWrite) {
            set.all.insert(p);
            set.any.insert(p);
        }
        privileges.insert("orders".to_owned(), set);
        let observed = Observed {
            role: Some(RoleState {
                attributes: BTreeSet::from([
                    Attribute::Inherit,
                    Attribute::Login,
                    Attribute::Createdb,
                ]),
                in_roles: BTreeSet::new(),
                parameters: BTreeMap::new(),
                password: PasswordState::Matches,
                marker: d.role.marker.clone(),
            }),
            privileges,
            secret: d.secret.clone(),
            ..Observed::default()
        };
        assert_eq!(plan(Engine::Postgres, &d, &observed), vec![]);

        // Drift: the Secret was deleted by hand, the password changed on the server.
        let drifted = Observed {
            secret: None,
            role: observed.role.clone().map(|r| RoleState {
                password: PasswordState::Differs,
                ..r
            }),
            ..observed
        };
        let repair = plan(Engine::Postgres, &d, &drifted);
        assert!(matches!(
            &repair[..],
            [
                Action::Sql(SqlAction::SetPassword { .. }),
                Action::ApplySecret(_)
            ]
        ));
    }

    #[test]
    fn disabled_target_writes_no_secret() {
        let mut u = user();
        u.spec.secret.conn_info_secret_target_disabled = Some(true);
        assert_eq!(target(&u), None);
        assert_eq!(secret_action(None, None), None);
    }
}
