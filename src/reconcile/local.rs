//! The Kubernetes side of `dbward reconcile --local`: DatabaseServices and Secrets from the
//! manifests and from the `--out` directory, held in memory; applied Secrets are recorded so
//! the command can print them or write them back as `<namespace>.<name>.yaml`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};

use crate::api::{AdmissionPolicySpec, DatabaseService, ServiceUser};

use super::{Cluster, Error};

type Key = (String, String);

/// An in-memory Kubernetes side.
#[derive(Default)]
pub struct LocalCluster {
    services: HashMap<String, DatabaseService>,
    users: HashMap<Key, ServiceUser>,
    namespaces: HashMap<String, Namespace>,
    policy: AdmissionPolicySpec,
    secrets: Mutex<BTreeMap<Key, Secret>>,
    applied: Mutex<BTreeMap<Key, Secret>>,
    deleted: Mutex<BTreeMap<Key, ()>>,
}

impl LocalCluster {
    /// An empty one.
    pub fn new() -> Self {
        LocalCluster::default()
    }

    /// Adds a DatabaseService.
    pub fn add_service(&mut self, service: DatabaseService) {
        let name = service.metadata.name.clone().unwrap_or_default();
        self.services.insert(name, service);
    }

    /// Adds a ServiceUser (what a ConnectionPool's `username` reads its Secret through).
    pub fn add_service_user(&mut self, user: ServiceUser) {
        let key = (
            user.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            user.metadata.name.clone().unwrap_or_default(),
        );
        self.users.insert(key, user);
    }

    /// The Secrets held (read from the manifests and `--out`, or applied) that carry `label`.
    pub fn secrets_labelled(&self, label: (&str, &str)) -> Vec<Secret> {
        let secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        secrets
            .values()
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(label.0))
                    .is_some_and(|v| v == label.1)
            })
            .cloned()
            .collect()
    }

    /// The Secrets deleted so far that existed, by (namespace, name).
    pub fn deleted(&self) -> Vec<(String, String)> {
        self.deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Adds a Namespace (its labels are what `allowedNamespaces.selector` matches).
    pub fn add_namespace(&mut self, namespace: Namespace) {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        self.namespaces.insert(name, namespace);
    }

    /// Sets the AdmissionPolicy (the built-in defaults otherwise).
    pub fn set_policy(&mut self, policy: AdmissionPolicySpec) {
        self.policy = policy;
    }

    /// Adds a Secret as if it existed in the cluster; `stringData` is folded into `data` as the
    /// API server does.
    pub fn add_secret(&mut self, mut secret: Secret) {
        if let Some(string_data) = secret.string_data.take() {
            let data = secret.data.get_or_insert_with(BTreeMap::new);
            for (k, v) in string_data {
                data.insert(k, ByteString(v.into_bytes()));
            }
        }
        let key = key_of(&secret);
        self.secrets
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, secret);
    }

    /// Reads every `*.yaml` Secret in `dir` (a missing directory holds none).
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, Error> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(file_error(dir, e)),
        };
        let mut count = 0;
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?;
            let secret: Secret = serde_yaml::from_str(&text).map_err(|e| file_error(&path, e))?;
            self.add_secret(secret);
            count += 1;
        }
        Ok(count)
    }

    /// The Secrets applied so far, by (namespace, name).
    pub fn applied(&self) -> Vec<Secret> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// `<namespace>.<name>.yaml`.
pub fn file_name(secret: &Secret) -> String {
    let (namespace, name) = key_of(secret);
    format!("{namespace}.{name}.yaml")
}

/// A Secret as a Kubernetes manifest (`apiVersion`, `kind`, base64 `data`).
pub fn to_yaml(secret: &Secret) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(secret)
}

fn key_of(secret: &Secret) -> Key {
    (
        secret
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        secret.metadata.name.clone().unwrap_or_default(),
    )
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::LocalFile {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl Cluster for LocalCluster {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
        let secrets = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        Ok(secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned())
    }

    async fn apply_secret(&self, secret: &Secret) -> Result<(), Error> {
        let key = key_of(secret);
        self.secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), secret.clone());
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, secret.clone());
        Ok(())
    }

    async fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), Error> {
        let key = (namespace.to_owned(), name.to_owned());
        let existed = self
            .secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
            .is_some();
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        if existed {
            self.deleted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, ());
        }
        Ok(())
    }

    async fn apply_object(&self, change: &super::pooler_plan::ObjectChange) -> Result<(), Error> {
        // Local mode realises a pooler as files (reconcile::local_pooler), never as objects.
        Err(Error::Invalid {
            message: format!(
                "local mode does not {change}: it writes the pooler's files under --out instead"
            ),
        })
    }

    async fn get_service(&self, name: &str) -> Result<Option<DatabaseService>, Error> {
        Ok(self.services.get(name).cloned())
    }

    fn is_complete(&self) -> bool {
        false
    }

    async fn get_service_user(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceUser>, Error> {
        Ok(self
            .users
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned())
    }

    async fn get_policy(&self) -> Result<AdmissionPolicySpec, Error> {
        Ok(self.policy.clone())
    }

    async fn get_namespace(&self, name: &str) -> Result<Option<Namespace>, Error> {
        Ok(self.namespaces.get(name).cloned())
    }
}
