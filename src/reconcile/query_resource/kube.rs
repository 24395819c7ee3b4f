//! A DatabaseQueryResource's children on the API server: discovery of the kinds rows render,
//! the children found by the CR's UID label (metadata only), the names a new child would take,
//! server-side apply (field manager `dbward`, never forced) and deletion.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::discovery::Scope as KubeScope;
use kube::{Client, ResourceExt};

use super::plan::{ChildKey, Desired, Observed, Scope};
use super::{HASH_ANNOTATION, UID_LABEL};
use crate::reconcile::kube_cluster::kube_error;
use crate::reconcile::{Error, FIELD_MANAGER};

/// How long a discovery answer is kept.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);
/// Page size of the children's lists.
const PAGE: u32 = 500;
/// Applies and deletions in flight at once.
const IN_FLIGHT: usize = 16;

/// A served kind.
#[derive(Debug, Clone)]
pub struct Served {
    /// For `Api::*_with`.
    pub resource: ApiResource,
    /// Namespaced or not.
    pub namespaced: bool,
}

/// Discovery's answers by `(apiVersion, kind)`, with when each was asked.
type Answers = BTreeMap<(String, String), (Instant, Option<Served>)>;

/// Discovery answers, per `(apiVersion, kind)`, kept for [`DISCOVERY_TTL`].
#[derive(Default)]
pub struct Discovery {
    known: Mutex<Answers>,
}

fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

impl Discovery {
    /// The kind as served, `None` when the API server does not serve it.
    pub async fn served(
        &self,
        client: &Client,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Served>, Error> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some((at, served)) = self.lock().get(&key)
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(served.clone());
        }
        let served = match kube::discovery::pinned_kind(client, &gvk(api_version, kind)).await {
            Ok((resource, caps)) => Some(Served {
                resource,
                namespaced: caps.scope == KubeScope::Namespaced,
            }),
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(kube::Error::Discovery(_)) => None,
            Err(e) => return Err(kube_error("discover a child's kind")(e)),
        };
        self.lock().insert(key, (Instant::now(), served.clone()));
        Ok(served)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Served kinds by `(apiVersion, kind)`, and how [`super::plan::place`] sees them.
pub type Kinds = BTreeMap<(String, String), Option<Served>>;

/// The served kinds of `kinds` by qualified kind (`ConfigMap`, `apps/Deployment`), as
/// [`ChildKey::kind`] names them.
pub fn by_qualified_kind(kinds: &Kinds) -> BTreeMap<String, Served> {
    kinds
        .iter()
        .filter_map(|((v, k), s)| {
            s.clone()
                .map(|s| (crate::query_template::object::qualified_kind(v, k), s))
        })
        .collect()
}

/// The scope of a kind in `kinds`.
pub fn scope_of(kinds: &Kinds, api_version: &str, kind: &str) -> Scope {
    match kinds.get(&(api_version.to_owned(), kind.to_owned())) {
        Some(Some(s)) if s.namespaced => Scope::Namespaced,
        Some(Some(_)) => Scope::Cluster,
        _ => Scope::Unknown(format!(
            "the API server serves no kind {kind:?} in {api_version:?}"
        )),
    }
}

fn api(client: &Client, served: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) if served.namespaced => Api::namespaced_with(client.clone(), ns, &served.resource),
        _ => Api::all_with(client.clone(), &served.resource),
    }
}

/// Names (with their UID label value and hash annotation) of every object of a kind in one
/// list scope, page by page, metadata only.
async fn list_names(
    api: &Api<DynamicObject>,
    selector: Option<&str>,
) -> Result<Vec<(Option<String>, String, Option<String>, Option<String>)>, Error> {
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    loop {
        let page = api
            .list_metadata(&params)
            .await
            .map_err(kube_error("list a DatabaseQueryResource's children"))?;
        for item in &page.items {
            out.push((
                item.metadata.namespace.clone(),
                item.name_any(),
                item.labels().get(UID_LABEL).cloned(),
                item.annotations().get(HASH_ANNOTATION).cloned(),
            ));
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => params = params.continue_token(&next),
            None => return Ok(out),
        }
    }
}

/// What exists: this CR's children of every kind in `kinds` (by its UID label, in its own
/// namespace unless `anywhere`), and which names the new children would take are held by
/// other objects.
pub async fn observe(
    client: &Client,
    kinds: &Kinds,
    uid: &str,
    namespace: &str,
    anywhere: bool,
    desired: &[Desired],
) -> Result<Observed, Error> {
    let mut observed = Observed::default();
    let selector = format!("{UID_LABEL}={uid}");
    let by_kind = by_qualified_kind(kinds);
    for (kind, served) in &by_kind {
        let scope = (!anywhere).then_some(namespace);
        for (ns, name, _, hash) in list_names(&api(client, served, scope), Some(&selector)).await? {
            observed.ours.insert(
                ChildKey {
                    kind: kind.clone(),
                    namespace: ns,
                    name,
                },
                hash,
            );
        }
    }
    // New children: is the name free? One list per kind and namespace that has any.
    let mut fresh: BTreeMap<(String, Option<String>), BTreeSet<&str>> = BTreeMap::new();
    for d in desired {
        if !observed.ours.contains_key(&d.key) {
            fresh
                .entry((d.key.kind.clone(), d.key.namespace.clone()))
                .or_default()
                .insert(d.key.name.as_str());
        }
    }
    for ((kind, ns), names) in fresh {
        let Some(served) = by_kind.get(&kind) else {
            continue;
        };
        let listed = list_names(&api(client, served, ns.as_deref()), None).await?;
        for (_, name, owner_uid, _) in listed {
            if names.contains(name.as_str()) && owner_uid.as_deref() != Some(uid) {
                observed.foreign.insert(ChildKey {
                    kind: kind.clone(),
                    namespace: ns.clone(),
                    name,
                });
            }
        }
    }
    Ok(observed)
}

/// Applies every child (at most [`IN_FLIGHT`] at once); each result is the object as stored,
/// or the API server's refusal.
pub async fn apply_all<'a>(
    client: &Client,
    kinds: &BTreeMap<String, Served>,
    desired: &'a [Desired],
) -> Vec<(&'a Desired, Result<DynamicObject, String>)> {
    // The futures own what they use (built before the stream), so the whole stays `Send`.
    let calls: Vec<_> = desired
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let api = kinds
                .get(&d.key.kind)
                .map(|served| api(client, served, d.key.namespace.as_deref()));
            let (name, kind, object) = (d.key.name.clone(), d.key.kind.clone(), d.object.clone());
            async move {
                let Some(api) = api else {
                    return (i, Err(format!("the kind {kind} is not served")));
                };
                let result = api
                    .patch(
                        &name,
                        &PatchParams::apply(FIELD_MANAGER),
                        &Patch::Apply(&object),
                    )
                    .await
                    .map_err(|e| match e {
                        kube::Error::Api(status) => status.message,
                        other => other.to_string(),
                    });
                (i, result)
            }
        })
        .collect();
    let results: Vec<(usize, Result<DynamicObject, String>)> = stream::iter(calls)
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results
        .into_iter()
        .map(|(i, result)| (&desired[i], result))
        .collect()
}

/// Deletes children; "not found" is success. Returns the failures.
pub async fn delete_all(
    client: &Client,
    kinds: &BTreeMap<String, Served>,
    keys: &[ChildKey],
) -> Vec<(ChildKey, String)> {
    let calls: Vec<_> = keys
        .iter()
        .filter_map(|key| {
            let served = kinds.get(&key.kind)?;
            let api = api(client, served, key.namespace.as_deref());
            let key = key.clone();
            Some(async move {
                match api.delete(&key.name, &DeleteParams::background()).await {
                    Ok(_) => None,
                    Err(kube::Error::Api(status)) if status.code == 404 => None,
                    Err(e) => Some((key, e.to_string())),
                }
            })
        })
        .collect();
    let results: Vec<Option<(ChildKey, String)>> = stream::iter(calls)
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().flatten().collect()
}
