//! What the rules know about other objects: DatabaseServices, connector Secrets, namespaces'
//! labels, and the AdmissionPolicy. The webhook fills it from its caches, `dbward validate` from
//! the files it reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine as _;
use serde_json::Value;

use crate::api::admission_policy::POLICY_NAME;
use crate::api::database_service::{CONNECTOR_LABEL, CONNECTOR_LABEL_VALUE};
use crate::api::{AdmissionPolicySpec, DatabaseService};

/// The parts of a connector Secret the rules look at: its labels, which keys it has, and the
/// values of `type` and `user`. Never the password (nor any other value).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectorSecret {
    pub labels: BTreeMap<String, String>,
    /// Keys present in `data` or `stringData`.
    pub keys: BTreeSet<String>,
    /// The decoded `type` key, if present.
    pub engine_type: Option<String>,
    /// The decoded `user` key, if present: the role dbward administers the server as, which no
    /// object may name.
    pub user: Option<String>,
}

/// A snapshot of the objects cross-object rules read.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub services: HashMap<String, DatabaseService>,
    /// Connector Secrets by (namespace, name).
    pub connector_secrets: HashMap<(String, String), ConnectorSecret>,
    /// Namespace labels, for `allowedNamespaces.selector`.
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
    pub policy: AdmissionPolicySpec,
    /// dbward's own namespace: the home of connector Secrets, and the one namespace a service
    /// without `allowedNamespaces` admits.
    pub operator_namespace: String,
    /// True when the snapshot is the cluster's (a missing reference is an error); false offline,
    /// where a missing reference is only a warning (the cluster may have it).
    pub complete: bool,
}

/// dbward's namespace when none is given.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "dbward-system";

impl Snapshot {
    /// An empty snapshot with the built-in policy.
    pub fn new(operator_namespace: &str, complete: bool) -> Snapshot {
        Snapshot {
            operator_namespace: operator_namespace.to_string(),
            complete,
            ..Snapshot::default()
        }
    }

    /// A snapshot of the DatabaseServices, connector Secrets, Namespaces and the `default`
    /// AdmissionPolicy among `objects`; other objects are ignored.
    pub fn from_objects(
        objects: impl IntoIterator<Item = Value>,
        operator_namespace: &str,
        complete: bool,
    ) -> Snapshot {
        let mut snapshot = Snapshot::new(operator_namespace, complete);
        for object in objects {
            snapshot.insert(&object);
        }
        snapshot
    }

    /// Add one object, if it is of a kind the snapshot holds.
    pub fn insert(&mut self, object: &Value) {
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = str_at(object, "/metadata/name")
            .unwrap_or_default()
            .to_string();
        match (api_version, kind) {
            (crate::api::API_VERSION, "DatabaseService") => {
                if let Ok(service) = serde_json::from_value::<DatabaseService>(object.clone()) {
                    self.services.insert(name, service);
                }
            }
            (crate::api::API_VERSION, "AdmissionPolicy") if name == POLICY_NAME => {
                if let Some(Ok(spec)) = object
                    .get("spec")
                    .map(|s| serde_json::from_value(s.clone()))
                {
                    self.policy = spec;
                }
            }
            ("v1", "Namespace") => {
                self.namespaces
                    .insert(name, string_map(object.pointer("/metadata/labels")));
            }
            ("v1", "Secret") => {
                let labels = string_map(object.pointer("/metadata/labels"));
                if labels.get(CONNECTOR_LABEL).map(String::as_str) != Some(CONNECTOR_LABEL_VALUE) {
                    return;
                }
                let namespace = str_at(object, "/metadata/namespace")
                    .unwrap_or("default")
                    .to_string();
                self.connector_secrets
                    .insert((namespace, name), connector_secret(object, labels));
            }
            _ => {}
        }
    }
}

fn connector_secret(object: &Value, labels: BTreeMap<String, String>) -> ConnectorSecret {
    let mut secret = ConnectorSecret {
        labels,
        ..ConnectorSecret::default()
    };
    // The API server merges `stringData` over `data`; so does this.
    if let Some(data) = object.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            secret.keys.insert(k.clone());
            let decoded = || {
                v.as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .and_then(|b| String::from_utf8(b).ok())
            };
            match k.as_str() {
                "type" => secret.engine_type = decoded(),
                "user" => secret.user = decoded(),
                _ => {}
            }
        }
    }
    if let Some(data) = object.get("stringData").and_then(Value::as_object) {
        for (k, v) in data {
            secret.keys.insert(k.clone());
            let value = || v.as_str().map(str::to_string);
            match k.as_str() {
                "type" => secret.engine_type = value(),
                "user" => secret.user = value(),
                _ => {}
            }
        }
    }
    secret
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl Snapshot {
    /// The user of `service`'s connector Secret, when the snapshot has the Secret.
    pub fn connector_user(&self, service: &DatabaseService) -> Option<&str> {
        let reference = &service.spec.connector_secret_ref;
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| self.operator_namespace.clone());
        self.connector_secrets
            .get(&(namespace, reference.name.clone()))
            .and_then(|s| s.user.as_deref())
    }
}
