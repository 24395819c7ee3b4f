//! The PostgresCluster's reads and writes on the API server: [`observe`] reads every object the
//! plan compares (a failed read is recorded, never skipped, so that the plan writes nothing
//! that cycle) and [`act`] executes the plan's changes — server-side apply with field manager
//! `dbward` for the objects, merge patches for a PVC's size and a pod's role label.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::api::PostgresCluster;
use crate::api::postgres_cluster::credentials_secret_name;
use crate::reconcile::Error;
use crate::reconcile::kube_cluster::{apply, kube_error};

use super::plan::{Change, Observed};
use super::{ROLE_LABEL, config_name, credential_users, headless_name, name_of, replicas_name};

/// What a read found, or why it failed; the first failure is kept whole for the error.
struct Reads {
    observed: Observed,
    first_error: Option<kube::Error>,
}

impl Reads {
    fn record<T>(&mut self, what: String, result: Result<T, kube::Error>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.observed.failed.push(format!("{what}: {e}"));
                self.first_error.get_or_insert(e);
                None
            }
        }
    }
}

/// Every object of `cluster` the plan compares. On a failed read the observation names it in
/// `failed` and the first error is returned beside it.
pub async fn observe(
    client: &Client,
    cluster: &PostgresCluster,
) -> (Observed, Option<kube::Error>) {
    let (name, namespace) = name_of(cluster);
    let mut reads = Reads {
        observed: Observed::default(),
        first_error: None,
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);

    let config = config_name(&name);
    let got = config_maps.get_opt(&config).await;
    reads.observed.config_map = reads
        .record(format!("get ConfigMap {namespace}/{config}"), got)
        .flatten()
        .map(|c| c.metadata);
    let got = sets.get_opt(&name).await;
    reads.observed.stateful_set = reads
        .record(format!("get StatefulSet {namespace}/{name}"), got)
        .flatten();
    let service_names = [name.clone(), replicas_name(&name), headless_name(&name)];
    for (at, service) in service_names.iter().enumerate() {
        let got = services.get_opt(service).await;
        reads.observed.services[at] = reads
            .record(format!("get Service {namespace}/{service}"), got)
            .flatten()
            .map(|s| s.metadata);
    }
    let got = pdbs.get_opt(&name).await;
    reads.observed.pdb = reads
        .record(format!("get PodDisruptionBudget {namespace}/{name}"), got)
        .flatten()
        .map(|p| p.metadata);
    for user in credential_users(cluster) {
        let secret = credentials_secret_name(&user, &name);
        let got = secrets.get_opt(&secret).await;
        if let Some(found) = reads
            .record(format!("get Secret {namespace}/{secret}"), got)
            .flatten()
        {
            reads.observed.secrets.insert(user, found);
        }
    }
    let selector = super::selector(&name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let params = ListParams::default().labels(&selector);
    let got = pvcs.list(&params).await;
    reads.observed.pvcs = reads
        .record(format!("list PVCs in {namespace} ({selector})"), got)
        .map(|l| l.items)
        .unwrap_or_default();
    let got = pods.list(&params).await;
    reads.observed.pods = reads
        .record(format!("list Pods in {namespace} ({selector})"), got)
        .map(|l| l.items)
        .unwrap_or_default();
    (reads.observed, reads.first_error)
}

/// Executes `changes` in order in `namespace`; returns notes on what the API server does not
/// serve (a PodDisruptionBudget on a server without `policy/v1`, before Kubernetes 1.21: the
/// cluster runs without one rather than not at all).
pub async fn act(
    client: &Client,
    namespace: &str,
    changes: &[Change],
) -> Result<Vec<String>, Error> {
    let mut notes = Vec::new();
    for change in changes {
        match change {
            Change::Pdb(o) => match apply(client, o.as_ref(), "apply PodDisruptionBudget").await {
                Err(Error::Kube { source, .. }) if matches!(source.as_ref(), kube::Error::Api(s) if s.code == 404) =>
                {
                    notes.push(
                        "the API server does not serve policy/v1 PodDisruptionBudgets (Kubernetes 1.21 or later does): the cluster has none".to_owned(),
                    );
                }
                other => other?,
            },
            Change::ConfigMap(o) => apply(client, o.as_ref(), "apply ConfigMap").await?,
            Change::StatefulSet(o) => apply(client, o.as_ref(), "apply StatefulSet").await?,
            Change::Service(o) => apply(client, o.as_ref(), "apply Service").await?,
            Change::Secret(o) => apply(client, o.as_ref(), "apply Secret").await?,
            Change::DeletePdb { name } => {
                let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
                match api.delete(name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(kube_error("delete PodDisruptionBudget")(e)),
                }
            }
            Change::ExpandPvc { name, size } => {
                let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
                let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(kube_error("expand PVC"))?;
            }
            Change::LabelPod { name, role } => {
                let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
                let patch = json!({"metadata": {"labels": {ROLE_LABEL: role}}});
                match api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {}
                    // The pod went away since it was listed: the next pass sees its successor.
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(kube_error("label Pod")(e)),
                }
            }
        }
    }
    Ok(notes)
}
