//! cert-manager for a pooler's certificate, when a `ReconfigureTLS` request names an
//! `issuerRef`: found by discovery (cert-manager is never a hard dependency), a `Certificate`
//! `<svc>-pooler` in dbward's namespace whose Secret is the pooler's serving Secret
//! ([`pooler_tls::tls_secret_name`]), labelled and annotated through `secretTemplate` as the
//! ConnectionPool reconciler expects ([`pooler_tls::recorded_policy`]).

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::api::DatabaseService;
use crate::api::database_ops_request::{IssuerKind, IssuerRef};

use super::kube_cluster::kube_error;
use super::pooler_tls::{self, ClientTlsPolicy};
use super::{Error, FIELD_MANAGER, MANAGED_BY};

/// cert-manager's API group and version.
pub const GROUP_VERSION: &str = "cert-manager.io/v1";

/// `Certificate` of cert-manager.io/v1.
pub fn certificate_resource() -> ApiResource {
    ApiResource {
        group: "cert-manager.io".to_owned(),
        version: "v1".to_owned(),
        api_version: GROUP_VERSION.to_owned(),
        kind: "Certificate".to_owned(),
        plural: "certificates".to_owned(),
    }
}

/// Whether the API server serves cert-manager's `Certificate` (discovery).
pub async fn served(client: &Client) -> Result<bool, Error> {
    match client.list_api_group_resources(GROUP_VERSION).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == "certificates")),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(kube_error("discover cert-manager.io/v1")(e)),
    }
}

/// The name of the pooler's `Certificate`.
pub fn certificate_name(service: &str) -> String {
    super::pooler::object_name(service)
}

/// Pure: the `Certificate` for `service`'s pooler from `issuer`.
pub fn certificate(
    service: &DatabaseService,
    operator_namespace: &str,
    issuer: &IssuerRef,
    policy: &ClientTlsPolicy,
) -> Value {
    let svc = service.name_any();
    let names = pooler_tls::dns_names(&svc, operator_namespace);
    let kind = match issuer.kind {
        IssuerKind::Issuer => "Issuer",
        IssuerKind::ClusterIssuer => "ClusterIssuer",
    };
    let owner = super::service_user::owner_reference(service).map(|o| vec![o]);
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": "Certificate",
        "metadata": {
            "name": certificate_name(&svc),
            "namespace": operator_namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1, pooler_tls::TLS_LABEL: svc},
            "ownerReferences": owner,
        },
        "spec": {
            "secretName": pooler_tls::tls_secret_name(&svc),
            "commonName": names[2],
            "dnsNames": names,
            "usages": ["server auth", "digital signature", "key encipherment"],
            "privateKey": {"rotationPolicy": "Always"},
            "issuerRef": {"name": issuer.name, "kind": kind, "group": issuer.api_group},
            "secretTemplate": {
                "labels": {MANAGED_BY.0: MANAGED_BY.1, pooler_tls::TLS_LABEL: svc},
                "annotations": {
                    pooler_tls::SSLMODE_ANNOTATION: policy.sslmode,
                    pooler_tls::AUTH_MODE_ANNOTATION: policy.auth_mode,
                },
            },
        },
    })
}

/// Pure: `Ok(())` when cert-manager has issued the `Certificate` as it is now (its `Ready`
/// condition is `True` for the current generation), else why not yet.
pub fn issued(certificate: &DynamicObject) -> Result<(), String> {
    let generation = certificate.metadata.generation;
    let ready = certificate.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    match ready {
        Some(c)
            if c["status"] == "True"
                && (generation.is_none() || c["observedGeneration"].as_i64() >= generation) =>
        {
            Ok(())
        }
        Some(c) => Err(format!(
            "Certificate {:?} is not Ready yet ({}: {})",
            certificate.name_any(),
            c["reason"].as_str().unwrap_or_default(),
            c["message"].as_str().unwrap_or_default()
        )),
        None => Err(format!(
            "Certificate {:?} has no Ready condition yet",
            certificate.name_any()
        )),
    }
}

/// Applies the `Certificate` (server-side apply) unless it is stored with this spec already
/// (a write would be one more thing for cert-manager to look at), and returns it as stored.
pub async fn apply_certificate(
    client: &Client,
    operator_namespace: &str,
    certificate: &Value,
) -> Result<DynamicObject, Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), operator_namespace, &certificate_resource());
    let name = certificate["metadata"]["name"].as_str().unwrap_or_default();
    let stored = api
        .get_opt(name)
        .await
        .map_err(kube_error("get Certificate"))?;
    if let Some(stored) = stored
        && stored.data["spec"] == certificate["spec"]
    {
        return Ok(stored);
    }
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(certificate),
    )
    .await
    .map_err(kube_error("apply Certificate"))
}

/// Deletes the pooler's `Certificate` when cert-manager is served (else there is none);
/// "not found" is success.
pub async fn delete_certificate(
    client: &Client,
    operator_namespace: &str,
    service: &str,
) -> Result<(), Error> {
    if !served(client).await? {
        return Ok(());
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), operator_namespace, &certificate_resource());
    match api
        .delete(&certificate_name(service), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(kube_error("delete Certificate")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::pooler_tls::tests::service;

    #[test]
    fn the_certificate_writes_the_pooler_serving_secret_with_the_policy() {
        let issuer = IssuerRef {
            name: "corp-ca".into(),
            kind: IssuerKind::ClusterIssuer,
            api_group: "cert-manager.io".into(),
        };
        let policy = ClientTlsPolicy {
            sslmode: "verify-full".into(),
            auth_mode: "scram".into(),
        };
        let c = certificate(&service(), "dbward-system", &issuer, &policy);
        assert_eq!(c["metadata"]["name"], "shared-pg-pooler");
        assert_eq!(c["spec"]["secretName"], "shared-pg-pooler-tls");
        assert_eq!(
            c["spec"]["issuerRef"],
            json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        );
        assert_eq!(
            c["spec"]["dnsNames"][2],
            "shared-pg-pooler.dbward-system.svc"
        );
        assert_eq!(
            c["spec"]["secretTemplate"]["annotations"][pooler_tls::SSLMODE_ANNOTATION],
            "verify-full"
        );
        assert_eq!(c["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
    }

    #[test]
    fn issued_means_ready_for_the_current_generation() {
        let cert = |generation: i64, status: &str, observed: i64| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": GROUP_VERSION, "kind": "Certificate",
                "metadata": {"name": "c", "generation": generation},
                "status": {"conditions": [{"type": "Ready", "status": status,
                    "reason": "Issuing", "message": "m", "observedGeneration": observed}]}
            }))
            .unwrap()
        };
        assert!(issued(&cert(2, "True", 2)).is_ok());
        // A changed issuer (a new generation) is not issued until cert-manager has seen it.
        assert!(issued(&cert(3, "True", 2)).is_err());
        assert!(
            issued(&cert(2, "False", 2))
                .unwrap_err()
                .contains("Issuing")
        );
    }
}
