//! The cluster's roles and databases, once its primary answers: the manifest's `users` (with
//! their flags, and the password of their credentials Secret) and `databases` (with their
//! owners), through the same SQL engine and plans as ServiceUser and Database. A password
//! changed in a Secret is set on the role (`ALTER ROLE … PASSWORD`, as a SCRAM verifier).
//!
//! Users removed from the manifest are **not dropped** (nor are databases): their data and
//! grants may still be in use, and a typo must not lose them. They keep their Secret too, which
//! the garbage collector removes with the cluster. `postgres` and the replication role
//! `standby` are the image's and the bootstrap's: their passwords are set at `initdb` from
//! their Secrets and not changed afterwards (dbward connects as `postgres`).

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{PostgresCluster, RoleFlag};
use crate::reconcile::guard::marker_of;
use crate::sql::{
    self, ConnectionInfo, DatabaseSpec, Engine, Password, RoleSpec, Server, SqlAction,
    plan_database, plan_role,
};

use super::{PORT, SUPERUSER, name_of};

/// The roles and databases the manifest asks for (roles first: databases name their owners).
pub fn desired(
    cluster: &PostgresCluster,
    passwords: &BTreeMap<String, Password>,
) -> (Vec<RoleSpec>, Vec<DatabaseSpec>) {
    let marker = marker_of(cluster);
    let roles = cluster
        .spec
        .users
        .iter()
        .map(|(name, flags)| {
            let flags: BTreeSet<RoleFlag> = flags.iter().flatten().copied().collect();
            let login = !flags.contains(&RoleFlag::Nologin);
            RoleSpec {
                name: name.clone(),
                password: login.then(|| passwords.get(name).cloned()).flatten(),
                flags,
                marker: Some(marker.clone()),
                ..RoleSpec::default()
            }
        })
        .collect();
    let databases = cluster
        .spec
        .databases
        .iter()
        .map(|(name, owner)| DatabaseSpec {
            name: name.clone(),
            owner: Some(owner.clone()),
            marker: Some(marker.clone()),
            ..DatabaseSpec::default()
        })
        .collect();
    (roles, databases)
}

/// How dbward reaches the cluster's primary: its Service, as `postgres`.
pub fn primary_connection(cluster: &PostgresCluster, password: &str) -> ConnectionInfo {
    let (name, namespace) = name_of(cluster);
    ConnectionInfo {
        engine: Engine::Postgres,
        host: format!("{name}.{namespace}.svc"),
        port: PORT as u16,
        user: SUPERUSER.to_owned(),
        password: password.to_owned(),
        sslmode: Some(
            if cluster.spec.tls.is_some() {
                "require"
            } else {
                "prefer"
            }
            .to_owned(),
        ),
        ca_cert: None,
    }
}

/// Observe → plan → apply on `server`: the actions executed (none when all was as desired).
pub async fn converge(
    server: &Server,
    roles: &[RoleSpec],
    databases: &[DatabaseSpec],
) -> Result<Vec<SqlAction>, sql::Error> {
    let candidates: Vec<(&str, Option<&str>)> = roles
        .iter()
        .map(|r| (r.name.as_str(), r.password.as_ref().map(Password::expose)))
        .collect();
    let observed = server.observe_roles(&candidates).await?;
    let mut actions: Vec<SqlAction> = roles
        .iter()
        .flat_map(|r| plan_role(Engine::Postgres, r, observed.get(&r.name)))
        .collect();
    let names: Vec<&str> = databases.iter().map(|d| d.name.as_str()).collect();
    let observed = server.observe_databases(&names).await?;
    actions.extend(
        databases
            .iter()
            .flat_map(|d| plan_database(d, observed.get(&d.name))),
    );
    if !actions.is_empty() {
        server.apply(&actions).await?;
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::postgres_cluster::objects::statefulset::tests::cluster;

    #[test]
    fn users_with_flags_and_passwords_databases_with_owners() {
        let mut c = cluster(1);
        c.spec
            .users
            .insert("reader".into(), Some(vec![RoleFlag::Nologin]));
        let passwords = BTreeMap::from([
            ("zalando".to_owned(), Password::new("pz")),
            ("foo_user".to_owned(), Password::new("pf")),
        ]);
        let (roles, databases) = desired(&c, &passwords);
        let by_name: BTreeMap<&str, &RoleSpec> =
            roles.iter().map(|r| (r.name.as_str(), r)).collect();
        assert_eq!(
            by_name.keys().copied().collect::<Vec<_>>(),
            ["foo_user", "reader", "zalando"]
        );
        assert_eq!(
            by_name["zalando"].flags,
            BTreeSet::from([RoleFlag::Superuser, RoleFlag::Createdb])
        );
        assert_eq!(by_name["zalando"].password.as_ref().unwrap().expose(), "pz");
        assert!(
            by_name["reader"].password.is_none(),
            "a nologin role has no password"
        );
        assert_eq!(databases.len(), 1);
        assert_eq!(
            (databases[0].name.as_str(), databases[0].owner.as_deref()),
            ("foo", Some("zalando"))
        );
        let info = primary_connection(&c, "pw");
        assert_eq!(
            (info.host.as_str(), info.port),
            ("acid-minimal-cluster.team-a.svc", 5432)
        );
    }
}
