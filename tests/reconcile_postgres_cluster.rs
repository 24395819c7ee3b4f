//! The PostgresCluster controller's reconcile against an in-memory Kubernetes API
//! (`kube-fake-client`): the seed's `acid-minimal-cluster` produces its StatefulSet, Services,
//! PDB, ConfigMap and credential Secrets owned by it; a second pass writes nothing; pods made
//! by hand (there is no kubelet) get their role and turn the cluster Running; editing
//! `numberOfInstances` or the version changes exactly what it must; a password the user set in
//! a Secret is kept.

mod common;
mod fake_api;

use std::collections::BTreeMap;
use std::sync::Arc;

use dbward::api::PostgresCluster;
use dbward::reconcile::controller::{State, reconcile_postgres_cluster};
use dbward::reconcile::secret::decoded_data;
use dbward::sql::{Attribute, PasswordState};
use futures::FutureExt as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;

const NS: &str = "team-a";
const NAME: &str = "acid-minimal-cluster";

/// The manifest's users and database, unique on the local PostgreSQL standing in for the
/// primary.
struct Names {
    owner: String,
    plain: String,
    db: String,
}

fn secret_of(user: &str) -> String {
    dbward::api::postgres_cluster::credentials_secret_name(user, NAME)
}

fn manifest(n: &Names, instances: i32) -> serde_json::Value {
    json!({
        "apiVersion": "dbward.dev/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": NAME, "namespace": NS, "uid": "pgc-uid", "generation": 1},
        "spec": {"teamId": "acid", "numberOfInstances": instances,
                 "volume": {"size": "1Gi"}, "postgresql": {"version": "16"},
                 "users": {n.owner.clone(): ["createrole", "createdb"], n.plain.clone(): []},
                 "databases": {n.db.clone(): n.owner.clone()},
                 "resources": {"requests": {"cpu": "100m", "memory": "500Mi"},
                               "limits": {"cpu": "1", "memory": "1Gi"}}}
    })
}

async fn pass(client: &Client, state: &Arc<State>) -> PostgresCluster {
    let api: Api<PostgresCluster> = Api::namespaced(client.clone(), NS);
    let cluster = api.get(NAME).await.unwrap();
    reconcile_postgres_cluster(Arc::new(cluster), state.clone())
        .await
        .expect("reconcile");
    api.get(NAME).await.unwrap()
}

/// The resourceVersion of every object the cluster has, by kind and name.
async fn versions(client: &Client) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    let mut put =
        |kind: &str, meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            out.insert(
                format!("{kind} {}", meta.name.clone().unwrap()),
                meta.resource_version.clone(),
            );
        };
    let lp = Default::default();
    for o in Api::<StatefulSet>::namespaced(client.clone(), NS)
        .list(&lp)
        .await
        .unwrap()
    {
        put("StatefulSet", &o.metadata);
    }
    for o in Api::<Service>::namespaced(client.clone(), NS)
        .list(&lp)
        .await
        .unwrap()
    {
        put("Service", &o.metadata);
    }
    for o in Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&lp)
        .await
        .unwrap()
    {
        put("ConfigMap", &o.metadata);
    }
    for o in Api::<Secret>::namespaced(client.clone(), NS)
        .list(&lp)
        .await
        .unwrap()
    {
        put("Secret", &o.metadata);
    }
    for o in Api::<PodDisruptionBudget>::namespaced(client.clone(), NS)
        .list(&lp)
        .await
        .unwrap()
    {
        put("PodDisruptionBudget", &o.metadata);
    }
    for o in Api::<Pod>::namespaced(client.clone(), NS)
        .list(&lp)
        .await
        .unwrap()
    {
        put("Pod", &o.metadata);
    }
    for o in Api::<PostgresCluster>::namespaced(client.clone(), NS)
        .list(&lp)
        .await
        .unwrap()
    {
        put("PostgresCluster", &o.metadata);
    }
    out
}

fn changed(
    before: &BTreeMap<String, Option<String>>,
    after: &BTreeMap<String, Option<String>>,
) -> Vec<String> {
    after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(
            before
                .keys()
                .filter(|k| !after.contains_key(*k))
                .map(|k| format!("{k} (deleted)")),
        )
        .collect()
}

fn condition(cluster: &PostgresCluster, type_: &str) -> (String, String) {
    let c = cluster
        .status
        .as_ref()
        .expect("status")
        .common
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.clone(), c.reason.clone())
}

/// A pod as the StatefulSet controller and a kubelet would leave it: the template's labels, its
/// pod-name label, Ready.
async fn make_pod(client: &Client, ordinal: u32) {
    let set: StatefulSet = Api::namespaced(client.clone(), NS).get(NAME).await.unwrap();
    let mut labels = set.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    let name = format!("{NAME}-{ordinal}");
    labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"containers": [{"name": "postgres", "image": "postgres:16"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_minimal_cluster_is_realised_and_then_left_alone() {
    let p = common::unique();
    let n = Names {
        owner: format!("{p}owner"),
        plain: format!("{p}plain"),
        db: format!("{p}db"),
    };
    let client = fake_api::client(vec![manifest(&n, 2)]).await;
    let mut state = State::new(client.clone(), "dbward-system", false);
    state.primary_override = Some(common::pg_info(5432));
    let state = Arc::new(state);
    // Cleaned up whatever happens (an assertion in the scenario panics).
    let result = std::panic::AssertUnwindSafe(scenario(&client, &state, &n))
        .catch_unwind()
        .await;
    let pg = common::pg();
    let _ = pg.drop_database(&n.db).await;
    for role in [&n.owner, &n.plain] {
        let _ = pg.drop_role(role).await;
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(client: &Client, state: &Arc<State>, n: &Names) {
    let (client, state) = (client.clone(), state.clone());
    let cluster = pass(&client, &state).await;

    let set: StatefulSet = Api::namespaced(client.clone(), NS).get(NAME).await.unwrap();
    let spec = set.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        spec.selector.match_labels,
        spec.template.metadata.as_ref().unwrap().labels
    );
    let container = &spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("postgres:16"));
    let requests = container.resources.clone().unwrap().requests.unwrap();
    assert_eq!(requests["cpu"].0, "250m", "raised to the minimum");
    assert_eq!(requests["memory"].0, "500Mi");
    for name in [
        NAME.to_owned(),
        format!("{NAME}-repl"),
        format!("{NAME}-headless"),
    ] {
        let s: Service = Api::namespaced(client.clone(), NS)
            .get(&name)
            .await
            .unwrap();
        let owner = &s.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("PostgresCluster", "pgc-uid")
        );
    }
    let pdb: PodDisruptionBudget = Api::namespaced(client.clone(), NS).get(NAME).await.unwrap();
    assert_eq!(
        pdb.spec.unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    for user in ["postgres", "standby", &n.owner, &n.plain] {
        let name = secret_of(user);
        let secret = secrets
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded_data(&secret)["password"].len(), 40, "{name}");
    }
    let _: ConfigMap = Api::namespaced(client.clone(), NS)
        .get(&format!("{NAME}-config"))
        .await
        .unwrap();
    let status = cluster.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Creating"));
    assert_eq!(
        status.primary_endpoint.as_deref(),
        Some("acid-minimal-cluster.team-a.svc:5432")
    );
    assert_eq!(
        condition(&cluster, "Ready"),
        ("False".into(), "Creating".into())
    );
    assert_eq!(condition(&cluster, "PrimaryAvailable").0, "False");
    assert!(
        !serde_json::to_string(&status).unwrap().contains(
            &decoded_data(
                &secrets
                    .get(&format!(
                        "postgres.{NAME}.credentials.postgresql.dbward.dev"
                    ))
                    .await
                    .unwrap()
            )["password"]
        )
    );

    // A second pass writes nothing.
    let before = versions(&client).await;
    pass(&client, &state).await;
    assert_eq!(
        changed(&before, &versions(&client).await),
        Vec::<String>::new()
    );

    // Pods made by hand get their role; the cluster runs.
    make_pod(&client, 0).await;
    make_pod(&client, 1).await;
    let cluster = pass(&client, &state).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for (ordinal, role) in [(0, "primary"), (1, "replica")] {
        let pod = pods.get(&format!("{NAME}-{ordinal}")).await.unwrap();
        assert_eq!(pod.metadata.labels.unwrap()["dbward.dev/role"], role);
    }
    assert_eq!(
        cluster.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(cluster.status.as_ref().unwrap().ready_instances, Some(2));
    assert_eq!(condition(&cluster, "Ready").0, "True");
    assert_eq!(condition(&cluster, "PrimaryAvailable").0, "True");
    assert_eq!(condition(&cluster, "ReplicasReady").0, "True");
    // The primary answered: the users with their flags and passwords, the database with its
    // owner.
    let pg = common::pg();
    let password = |user: &str| {
        let secrets = secrets.clone();
        let name = secret_of(user);
        async move { decoded_data(&secrets.get(&name).await.unwrap())["password"].clone() }
    };
    let owner_password = password(&n.owner).await;
    let owner = pg
        .observe_role(&n.owner, Some(&owner_password))
        .await
        .unwrap()
        .expect("owner role");
    assert_eq!(owner.password, PasswordState::Matches);
    for attribute in [Attribute::Createrole, Attribute::Createdb, Attribute::Login] {
        assert!(
            owner.attributes.contains(&attribute),
            "{attribute:?}: {:?}",
            owner.attributes
        );
    }
    assert!(!owner.attributes.contains(&Attribute::Superuser));
    let plain = pg
        .observe_role(&n.plain, None)
        .await
        .unwrap()
        .expect("plain role");
    assert!(plain.attributes.contains(&Attribute::Login));
    let db = pg.observe_database(&n.db).await.unwrap().expect("database");
    assert_eq!(db.owner.as_deref(), Some(n.owner.as_str()));
    let before = versions(&client).await;
    pass(&client, &state).await;
    assert_eq!(
        changed(&before, &versions(&client).await),
        Vec::<String>::new()
    );

    // One instance: the StatefulSet scales, the PDB goes; nothing else is written.
    let clusters: Api<PostgresCluster> = Api::namespaced(client.clone(), NS);
    let edit = |patch: serde_json::Value| {
        let clusters = clusters.clone();
        async move {
            clusters
                .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    edit(json!({"spec": {"numberOfInstances": 1}})).await;
    let before = versions(&client).await;
    let cluster = pass(&client, &state).await;
    let mut what = changed(&before, &versions(&client).await);
    what.retain(|k| !k.starts_with("PostgresCluster"));
    assert_eq!(
        what,
        [
            "StatefulSet acid-minimal-cluster",
            "PodDisruptionBudget acid-minimal-cluster (deleted)"
        ]
    );
    let set: StatefulSet = Api::namespaced(client.clone(), NS).get(NAME).await.unwrap();
    assert_eq!(set.spec.unwrap().replicas, Some(1));
    assert!(cluster.meta().name.is_some());

    // A new version: only the StatefulSet.
    edit(json!({"spec": {"postgresql": {"version": "17"}}})).await;
    let before = versions(&client).await;
    pass(&client, &state).await;
    let mut what = changed(&before, &versions(&client).await);
    what.retain(|k| !k.starts_with("PostgresCluster"));
    assert_eq!(what, ["StatefulSet acid-minimal-cluster"]);
    let set: StatefulSet = Api::namespaced(client.clone(), NS).get(NAME).await.unwrap();
    let image = set.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("postgres:17"));

    // A password set by the user in the Secret is kept, not overwritten.
    let name = secret_of(&n.owner);
    secrets
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"data": {"password": "Y2hvc2Vu"}})),
        )
        .await
        .unwrap();
    let before = versions(&client).await;
    pass(&client, &state).await;
    assert_eq!(
        decoded_data(&secrets.get(&name).await.unwrap())["password"],
        "chosen"
    );
    let mut what = changed(&before, &versions(&client).await);
    what.retain(|k| !k.starts_with("PostgresCluster"));
    assert_eq!(what, Vec::<String>::new());
    let owner = pg
        .observe_role(&n.owner, Some("chosen"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        owner.password,
        PasswordState::Matches,
        "ALTER ROLE … PASSWORD"
    );
}
