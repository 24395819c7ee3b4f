//! The controllers' reconcile functions against an in-memory Kubernetes API
//! (`kube-fake-client`) and the real PostgreSQL: Secrets (name, keys, labels, owner reference),
//! status conditions, the finalizer, quiet resyncs and deletion.

mod common;
mod fake_api;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use dbward::api::{Database, DatabaseClaim, DatabaseService, ServiceUser};
use dbward::reconcile::FINALIZER;
use dbward::reconcile::controller::{State, reconcile};
use dbward::reconcile::kube_cluster::{Caches, PoolerCaches};
use dbward::reconcile::secret::decoded_data;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde_json::json;

use fake_api::{client, counting_client};

const NS: &str = "dbward-system";

fn base_objects(pg_port: u16) -> Vec<serde_json::Value> {
    vec![
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "pg-admin", "namespace": NS,
                         "labels": {"dbward.dev/connector-type": "shared-database"}},
            "data": {"endpoint": "MTI3LjAuMC4x", "port": base64(&pg_port.to_string()),
                     "user": "cG9zdGdyZXM=", "password": "", "type": "cG9zdGdyZXM="}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseService",
            "metadata": {"name": "svc"},
            "spec": {"engine": "postgres", "project": "proj",
                     "connectorSecretRef": {"name": "pg-admin"},
                     "allowedNamespaces": {"names": ["*"]}}
        }),
    ]
}

fn base64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn ready(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> (String, String) {
    let c = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    (c.status.clone(), c.reason.clone())
}

#[tokio::test]
async fn service_user_secret_status_finalizer_and_quiet_resync() {
    let p = common::unique();
    let username = format!("{p}kube");
    let mut objects = base_objects(5432);
    objects.push(json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "ServiceUser",
        "metadata": {"name": "app", "namespace": "team"},
        "spec": {"project": "proj", "serviceName": "svc", "username": username,
                 "connInfoSecretTarget": {"name": "app-creds", "labels": {"team": "a"},
                                          "annotations": {"note": "x"}, "prefix": "APP_"}}
    }));
    let client = client(objects).await;
    let state = Arc::new(State::new(client.clone(), NS, false));
    let users: Api<ServiceUser> = Api::namespaced(client.clone(), "team");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team");

    let user = users.get("app").await.unwrap();
    reconcile(Arc::new(user), state.clone()).await.unwrap();

    let user = users.get("app").await.unwrap();
    assert!(
        user.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER)
    );
    let status = user.status.clone().expect("status");
    assert_eq!(
        ready(&status.common.conditions),
        ("True".into(), "Reconciled".into())
    );
    assert_eq!(status.common.observed_generation, user.metadata.generation);

    let secret = secrets.get("app-creds").await.unwrap();
    let data = decoded_data(&secret);
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "APP_CA_CERT",
            "APP_DATABASE_URI",
            "APP_HOST",
            "APP_PASSWORD",
            "APP_PORT",
            "APP_SSLMODE",
            "APP_USERNAME"
        ]
    );
    assert_eq!(data["APP_USERNAME"], username);
    assert_eq!(secret.metadata.labels.as_ref().unwrap()["team"], "a");
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "dbward",
        "the controllers find the Secrets they wrote by this label"
    );
    assert_eq!(secret.metadata.annotations.as_ref().unwrap()["note"], "x");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "ServiceUser");
    assert_eq!(Some(&owner.uid), user.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));
    let status_text = serde_json::to_string(&user.status).unwrap();
    assert!(
        !status_text.contains(&data["APP_PASSWORD"]),
        "no secret in status"
    );

    // A resync of the unchanged object writes nothing, anywhere.
    let versions = (
        user.metadata.resource_version.clone(),
        secret.metadata.resource_version.clone(),
    );
    let writes = state.ctx.sql_writes();
    reconcile(Arc::new(user), state.clone()).await.unwrap();
    let user = users.get("app").await.unwrap();
    let secret = secrets.get("app-creds").await.unwrap();
    assert_eq!(
        (
            user.metadata.resource_version.clone(),
            secret.metadata.resource_version.clone()
        ),
        versions
    );
    assert_eq!(state.ctx.sql_writes(), writes);
    assert_eq!(decoded_data(&secret)["APP_PASSWORD"], data["APP_PASSWORD"]);

    // The Secret deleted by hand is restored.
    secrets
        .delete("app-creds", &Default::default())
        .await
        .unwrap();
    reconcile(Arc::new(user.clone()), state.clone())
        .await
        .unwrap();
    assert!(secrets.get_opt("app-creds").await.unwrap().is_some());

    // Deletion: the cleanup drops the role, then the finalizer goes.
    let mut deleting: ServiceUser = users.get("app").await.unwrap();
    deleting.metadata.deletion_timestamp = Some(dbward::reconcile::status::now());
    reconcile(Arc::new(deleting), state.clone()).await.unwrap();
    let gone = users.get_opt("app").await.unwrap();
    assert!(
        gone.is_none_or(|u| !u
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER)),
        "finalizer removed"
    );
    assert!(
        common::pg()
            .observe_role(&username, None)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn unreachable_server_sets_ready_false() {
    let port = common::free_port();
    let mut objects = base_objects(port);
    objects.push(json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "Database",
        "metadata": {"name": "orders", "namespace": "team"},
        "spec": {"project": "proj", "serviceName": "svc"}
    }));
    let client = client(objects).await;
    let state = Arc::new(State::new(client.clone(), NS, false));
    let dbs: Api<Database> = Api::namespaced(client.clone(), "team");

    let err = reconcile(Arc::new(dbs.get("orders").await.unwrap()), state.clone())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ServiceUnreachable");
    let db = dbs.get("orders").await.unwrap();
    let (status, reason) = ready(&db.status.unwrap().common.conditions);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ServiceUnreachable")
    );
}

#[tokio::test]
async fn claim_pins_names_and_deletes_per_policy() {
    let p = common::unique();
    let namespace = format!("{}ns", p.replace('_', "-"));
    let mut objects = base_objects(5432);
    objects.push(json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseClaim",
        "metadata": {"name": "store", "namespace": namespace},
        "spec": {"project": "proj", "serviceName": "svc", "deletionPolicy": "Delete"}
    }));
    let client = client(objects).await;
    let state = Arc::new(State::new(client.clone(), NS, false));
    let claims: Api<DatabaseClaim> = Api::namespaced(client.clone(), &namespace);

    reconcile(Arc::new(claims.get("store").await.unwrap()), state.clone())
        .await
        .unwrap();
    let claim = claims.get("store").await.unwrap();
    let status = claim.status.clone().unwrap();
    let expected = dbward::api::database_claim::derived_name(&namespace, "store", 63);
    assert_eq!(status.database_name.as_deref(), Some(expected.as_str()));
    assert_eq!(status.username.as_deref(), Some(expected.as_str()));
    let secret: Secret = Api::namespaced(client.clone(), &namespace)
        .get("store")
        .await
        .unwrap();
    assert_eq!(decoded_data(&secret).len(), 7);

    let mut deleting = claim;
    deleting.metadata.deletion_timestamp = Some(dbward::reconcile::status::now());
    reconcile(Arc::new(deleting), state.clone()).await.unwrap();
    let pg = common::pg();
    assert!(pg.observe_database(&expected).await.unwrap().is_none());
    assert!(pg.observe_role(&expected, None).await.unwrap().is_none());
}

/// A store holding `objects` (as a watch's first list leaves it).
fn filled<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

#[tokio::test]
async fn an_unchanged_resync_through_the_caches_asks_the_api_server_nothing() {
    let p = common::unique();
    let username = format!("{p}cached");
    let mut objects = base_objects(5432);
    objects.push(json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "ServiceUser",
        "metadata": {"name": "app", "namespace": "team"},
        "spec": {"project": "proj", "serviceName": "svc", "username": username,
                 "connInfoSecretTarget": {"name": "app-creds", "prefix": "APP_"}}
    }));
    let services: Vec<DatabaseService> = objects
        .iter()
        .filter(|o| o["kind"] == "DatabaseService")
        .map(|o| serde_json::from_value(o.clone()).unwrap())
        .collect();
    let gets = Arc::new(AtomicUsize::new(0));
    let client = counting_client(objects, gets.clone()).await;
    let state = Arc::new(State::new(client.clone(), NS, false));
    let users: Api<ServiceUser> = Api::namespaced(client.clone(), "team");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team");

    // Without caches: the service, its connector, the policy and the target Secret are read.
    reconcile(Arc::new(users.get("app").await.unwrap()), state.clone())
        .await
        .unwrap();
    let password = decoded_data(&secrets.get("app-creds").await.unwrap())["APP_PASSWORD"].clone();

    let connectors: Vec<Secret> = Api::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let owned: Vec<Secret> = secrets.list(&ListParams::default()).await.unwrap().items;
    let synced = Arc::new(AtomicBool::new(false));
    let caches = |owned: Vec<Secret>| {
        Arc::new(Caches {
            services: filled(services.clone()),
            policies: filled(Vec::new()),
            connectors: filled(connectors.clone()),
            owned_secrets: filled(owned),
            users: filled(Vec::new()),
            pools: filled(Vec::new()),
            pooler: PoolerCaches {
                config_maps: filled(Vec::new()),
                services: filled(Vec::new()),
                deployments: filled(Vec::new()),
                pods: filled(Vec::new()),
            },
            operator_namespace: NS.to_owned(),
            synced: synced.clone(),
        })
    };
    state.ctx.cluster.use_caches(Some(caches(owned.clone())));

    // Caches not synced yet: still read from the API server.
    let user = users.get("app").await.unwrap();
    let before = gets.load(Ordering::Relaxed);
    reconcile(Arc::new(user.clone()), state.clone())
        .await
        .unwrap();
    assert!(gets.load(Ordering::Relaxed) - before >= 3);

    // Synced: an unchanged resync reads nothing and writes nothing.
    synced.store(true, Ordering::Release);
    let writes = state.ctx.sql_writes();
    let version = secrets
        .get("app-creds")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let before = gets.load(Ordering::Relaxed);
    reconcile(Arc::new(user.clone()), state.clone())
        .await
        .unwrap();
    assert_eq!(
        gets.load(Ordering::Relaxed),
        before,
        "GETs on a cached resync"
    );
    assert_eq!(state.ctx.sql_writes(), writes);

    // A cache that has not seen the Secret yet costs one read, never a new password.
    state.ctx.cluster.use_caches(Some(caches(Vec::new())));
    let before = gets.load(Ordering::Relaxed);
    reconcile(Arc::new(user), state.clone()).await.unwrap();
    assert_eq!(gets.load(Ordering::Relaxed) - before, 1);
    let secret = secrets.get("app-creds").await.unwrap();
    assert_eq!(secret.metadata.resource_version, version);
    assert_eq!(decoded_data(&secret)["APP_PASSWORD"], password);
    assert_eq!(state.ctx.sql_writes(), writes);

    let mut deleting = users.get("app").await.unwrap();
    deleting.metadata.deletion_timestamp = Some(dbward::reconcile::status::now());
    reconcile(Arc::new(deleting), state.clone()).await.unwrap();
}

#[tokio::test]
async fn a_connector_outside_dbwards_namespace_is_never_read() {
    // A DatabaseService stored while the webhook was away, pointing at a tenant's Secret.
    let objects = vec![
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "fake-admin", "namespace": "team",
                         "labels": {"dbward.dev/connector-type": "shared-database"}},
            "data": {"endpoint": "MTI3LjAuMC4x", "port": base64("5432"),
                     "user": "cG9zdGdyZXM=", "password": "", "type": "cG9zdGdyZXM="}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "DatabaseService",
            "metadata": {"name": "svc"},
            "spec": {"engine": "postgres", "project": "proj",
                     "connectorSecretRef": {"name": "fake-admin", "namespace": "team"},
                     "allowedNamespaces": {"names": ["*"]}}
        }),
        json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "Database",
            "metadata": {"name": "orders", "namespace": "team"},
            "spec": {"project": "proj", "serviceName": "svc"}
        }),
    ];
    let client = client(objects).await;
    let state = Arc::new(State::new(client.clone(), NS, false));
    let dbs: Api<Database> = Api::namespaced(client.clone(), "team");
    let err = reconcile(Arc::new(dbs.get("orders").await.unwrap()), state.clone())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "Invalid", "{err}");
    assert!(
        err.to_string()
            .contains("spec.connectorSecretRef.namespace"),
        "{err}"
    );
    assert!(state.ctx.servers().is_empty(), "no server built from it");
}
