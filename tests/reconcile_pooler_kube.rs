//! The ConnectionPool controller's reconcile against an in-memory Kubernetes API
//! (`kube-fake-client`) and the real PostgreSQL: the pooler's Deployment, Service, ConfigMap and
//! auth Secret in dbward's namespace owned by the DatabaseService, the pool Secret, the status
//! while no PgBouncer pod runs (there is no kubelet), a quiet second pass, and removal with the
//! last pool.

mod common;
mod fake_api;

use std::sync::Arc;

use dbward::api::{ConnectionPool, Database, ServiceUser};
use dbward::reconcile::controller::{State, reconcile};
use dbward::reconcile::secret::decoded_data;
use futures::FutureExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::Client;
use kube::api::Api;
use serde_json::json;

use fake_api::client;

const NS: &str = "dbward-system";

fn ready(pool: &ConnectionPool) -> (String, String, String) {
    let c = pool
        .status
        .as_ref()
        .expect("status")
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition")
        .clone();
    (c.status, c.reason, c.message)
}

#[tokio::test]
async fn pooler_objects_follow_the_pools() {
    let p = common::unique();
    let ns = format!("{}ns", p.replace('_', "-"));
    let svc = format!("{}-pg", p.trim_end_matches('_').replace('_', "-"));
    let (db, user) = (format!("{p}db"), format!("{p}app"));
    let objects = vec![
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "pg-admin", "namespace": NS,
                         "labels": {"dbward.dev/connector-type": "shared-database"}},
            "stringData": {"endpoint": "127.0.0.1", "port": "5432", "user": "postgres",
                           "password": "", "type": "postgres"}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseService",
            "metadata": {"name": svc, "uid": "svc-uid"},
            "spec": {"engine": "postgres", "project": "proj",
                     "connectorSecretRef": {"name": "pg-admin"},
                     "allowedNamespaces": {"names": ["*"]}}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "Database",
            "metadata": {"name": "db", "namespace": ns},
            "spec": {"project": "proj", "serviceName": svc, "databaseName": db,
                     "deletionPolicy": "Delete"}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "ServiceUser",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {"project": "proj", "serviceName": svc, "username": user,
                     "privileges": [{"database": db, "level": "readWrite"}]}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "ConnectionPool",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"project": "proj", "serviceName": svc, "databaseName": db,
                     "username": user, "poolMode": "transaction", "poolSize": 7}
        }),
    ];
    let client = client(objects).await;
    let state = Arc::new(State::new(client.clone(), NS, false));
    // Cleaned up whatever happens (an assertion in the scenario panics).
    let result = std::panic::AssertUnwindSafe(scenario(&client, &state, &ns, &svc, &db, &user))
        .catch_unwind()
        .await;
    let pg = common::pg();
    let _ = pg.drop_database(&db).await;
    for role in [user.clone(), dbward::reconcile::pooler::lookup_role(&svc)] {
        let _ = pg.drop_role(&role).await;
    }
    match result {
        Ok(result) => result.unwrap(),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn scenario(
    client: &Client,
    state: &Arc<State>,
    ns: &str,
    svc: &str,
    db: &str,
    user: &str,
) -> Result<(), String> {
    let dbs: Api<Database> = Api::namespaced(client.clone(), ns);
    let users: Api<ServiceUser> = Api::namespaced(client.clone(), ns);
    let pools: Api<ConnectionPool> = Api::namespaced(client.clone(), ns);
    reconcile(Arc::new(dbs.get("db").await.unwrap()), state.clone())
        .await
        .map_err(|e| e.to_string())?;
    reconcile(Arc::new(users.get("app").await.unwrap()), state.clone())
        .await
        .map_err(|e| e.to_string())?;

    // No kubelet: the objects are there, the pool is not Ready, and says why.
    let err = reconcile(Arc::new(pools.get("web").await.unwrap()), state.clone())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "PoolerNotReady", "{err}");
    let pool = pools.get("web").await.unwrap();
    let (status, reason, message) = ready(&pool);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "PoolerNotReady")
    );
    assert!(message.contains(&format!("{NS}/{svc}-pooler")), "{message}");

    let name = format!("{svc}-pooler");
    let config: ConfigMap = Api::namespaced(client.clone(), NS)
        .get(&name)
        .await
        .unwrap();
    let service: Service = Api::namespaced(client.clone(), NS)
        .get(&name)
        .await
        .unwrap();
    let deployment: Deployment = Api::namespaced(client.clone(), NS)
        .get(&name)
        .await
        .unwrap();
    let auth: Secret = Api::namespaced(client.clone(), NS)
        .get(&name)
        .await
        .unwrap();
    for meta in [
        &config.metadata,
        &service.metadata,
        &deployment.metadata,
        &auth.metadata,
    ] {
        let owner = &meta.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("DatabaseService", "svc-uid")
        );
    }
    let ini = &config.data.as_ref().unwrap()["pgbouncer.ini"];
    assert!(
        ini.contains(&format!(
            "\nweb = host=127.0.0.1 port=5432 dbname={db} pool_mode=transaction pool_size=7 "
        )),
        "{ini}"
    );
    assert!(
        ini.contains("auth_hba_file = /etc/pgbouncer/config/hba.conf"),
        "{ini}"
    );
    let auth_data = decoded_data(&auth);
    assert!(auth_data["userlist.txt"].contains("\"dbward_pgbouncer_admin\" \"SCRAM-SHA-256$"));
    let secret: Secret = Api::namespaced(client.clone(), ns)
        .get("web")
        .await
        .unwrap();
    let data = decoded_data(&secret);
    assert_eq!(data.len(), 9);
    assert_eq!(data["CONNECTIONPOOL_HOST"], format!("{name}.{NS}.svc"));
    assert_eq!(data["CONNECTIONPOOL_DATABASE"], "web");
    assert_eq!(data["CONNECTIONPOOL_USER"], user);
    let user_secret: Secret = Api::namespaced(client.clone(), ns)
        .get("app")
        .await
        .unwrap();
    assert_eq!(
        data["CONNECTIONPOOL_PASSWORD"],
        decoded_data(&user_secret)["SERVICEUSER_PASSWORD"],
        "the ServiceUser's password"
    );
    assert!(
        !serde_json::to_string(&pool.status)
            .unwrap()
            .contains(&data["CONNECTIONPOOL_PASSWORD"])
    );

    // A second pass writes nothing: no object, no Secret, no status, no SQL.
    let versions =
        |c: &ConfigMap, s: &Service, d: &Deployment, a: &Secret, p: &Secret, o: &ConnectionPool| {
            [
                c.metadata.resource_version.clone(),
                s.metadata.resource_version.clone(),
                d.metadata.resource_version.clone(),
                a.metadata.resource_version.clone(),
                p.metadata.resource_version.clone(),
                o.metadata.resource_version.clone(),
            ]
        };
    let before = versions(&config, &service, &deployment, &auth, &secret, &pool);
    let writes = state.ctx.sql_writes();
    let again = reconcile(Arc::new(pool.clone()), state.clone())
        .await
        .unwrap_err();
    assert_eq!(again.reason(), "PoolerNotReady");
    let after = versions(
        &Api::namespaced(client.clone(), NS)
            .get(&name)
            .await
            .unwrap(),
        &Api::namespaced(client.clone(), NS)
            .get(&name)
            .await
            .unwrap(),
        &Api::namespaced(client.clone(), NS)
            .get(&name)
            .await
            .unwrap(),
        &Api::namespaced(client.clone(), NS)
            .get(&name)
            .await
            .unwrap(),
        &Api::namespaced(client.clone(), ns)
            .get("web")
            .await
            .unwrap(),
        &pools.get("web").await.unwrap(),
    );
    assert_eq!(after, before, "an unchanged pass writes nothing");
    assert_eq!(state.ctx.sql_writes(), writes, "and no SQL");

    // The ServiceUser's password changes (its Secret): the pool Secret follows.
    let user_secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    user_secrets
        .patch(
            "app",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"stringData": {"SERVICEUSER_PASSWORD": "rotated-Pw1"}}),
            ),
        )
        .await
        .unwrap();
    let _ = reconcile(Arc::new(pools.get("web").await.unwrap()), state.clone()).await;
    let secret: Secret = Api::namespaced(client.clone(), ns)
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        decoded_data(&secret)["CONNECTIONPOOL_PASSWORD"],
        "rotated-Pw1"
    );

    // The last pool deleted: everything of the pooler goes.
    let mut deleting = pools.get("web").await.unwrap();
    deleting.metadata.deletion_timestamp = Some(dbward::reconcile::status::now());
    reconcile(Arc::new(deleting), state.clone())
        .await
        .map_err(|e| e.to_string())?;
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), NS)
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Service>::namespaced(client.clone(), NS)
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Deployment>::namespaced(client.clone(), NS)
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Secret>::namespaced(client.clone(), NS)
            .get_opt(&name)
            .await
            .unwrap()
            .is_none()
    );
    let lookup = dbward::reconcile::pooler::lookup_role(svc);
    assert!(
        common::pg()
            .observe_role(&lookup, None)
            .await
            .unwrap()
            .is_none()
    );
    Ok(())
}
