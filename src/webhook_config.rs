//! `dbward webhook-config`: the ValidatingWebhookConfiguration and MutatingWebhookConfiguration
//! that send every dbward kind to the webhook, printed as multi-document YAML.
//!
//! `webhooks/` holds the output for the defaults; `tests/webhook_config.rs` fails when it drifts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use crate::api::{GROUP, KINDS, VERSION};

/// Path of the validating endpoint on the webhook server.
pub const VALIDATE_PATH: &str = "/validate";
/// Path of the mutating endpoint on the webhook server.
pub const MUTATE_PATH: &str = "/mutate";
/// Name of both configuration objects.
pub const CONFIGURATION_NAME: &str = "dbward";
/// A namespace labelled `dbward.dev/webhook: skip` is never sent to the webhook (useful on
/// clusters older than 1.21, whose namespaces lack `kubernetes.io/metadata.name`).
pub const SKIP_LABEL: &str = "dbward.dev/webhook";

/// How the API server reacts when the webhook cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailurePolicy {
    /// Reject the request (safe: nothing unchecked gets in).
    #[value(name = "Fail")]
    Fail,
    /// Admit the request unchecked (the CRD schemas still apply).
    #[value(name = "Ignore")]
    Ignore,
}

impl FailurePolicy {
    fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }
    }
}

/// Arguments of `dbward webhook-config`.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookConfigArgs {
    /// Name of the webhook's Service.
    #[arg(long, default_value = "dbward-webhook")]
    pub service: String,
    /// Namespace of the webhook's Service (also skipped by the namespace selector).
    #[arg(long, default_value = "dbward-system")]
    pub namespace: String,
    /// Port of the webhook's Service.
    #[arg(long, default_value_t = 443)]
    pub port: u16,
    /// PEM file of the CA that signed the serving certificate (e.g. `ca.crt` from `dbward certs`).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Let cert-manager's CA injector fill the CA bundle from this Certificate (`NAMESPACE/NAME`).
    #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with = "ca_bundle")]
    pub inject_ca_from: Option<String>,
    /// What the API server does when the webhook does not answer.
    #[arg(long, value_enum, default_value_t = FailurePolicy::Fail)]
    pub failure_policy: FailurePolicy,
    /// How long the API server waits for an answer (1 to 30 seconds).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..=30))]
    pub timeout_seconds: i32,
    /// Call the webhook at this base URL (`https://host:port`) instead of through the Service,
    /// for a webhook run outside the cluster.
    #[arg(long, value_name = "BASE")]
    pub url: Option<String>,
}

impl Default for WebhookConfigArgs {
    fn default() -> Self {
        WebhookConfigArgs {
            service: "dbward-webhook".into(),
            namespace: "dbward-system".into(),
            port: 443,
            ca_bundle: None,
            inject_ca_from: None,
            failure_policy: FailurePolicy::Fail,
            timeout_seconds: 10,
            url: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("reading the CA bundle {path}: {source}")]
    ReadCaBundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA bundle {path} holds no PEM certificate")]
    EmptyCaBundle { path: PathBuf },
    #[error("--url must start with https:// (got {url:?})")]
    InsecureUrl { url: String },
    #[error("serializing the configuration: {0}")]
    Serialize(#[from] serde_yaml::Error),
}

/// The two configurations, ready to serialize.
pub fn configurations(
    args: &WebhookConfigArgs,
    ca_bundle: Option<&[u8]>,
) -> Result<(ValidatingWebhookConfiguration, MutatingWebhookConfiguration), WebhookConfigError> {
    let metadata = ObjectMeta {
        name: Some(CONFIGURATION_NAME.to_string()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_string(),
            "dbward".to_string(),
        )])),
        annotations: args.inject_ca_from.as_ref().map(|from| {
            BTreeMap::from([("cert-manager.io/inject-ca-from".to_string(), from.clone())])
        }),
        ..ObjectMeta::default()
    };
    let client_config = |path: &str| -> Result<WebhookClientConfig, WebhookConfigError> {
        let ca_bundle = ca_bundle.map(|pem| ByteString(pem.to_vec()));
        Ok(match &args.url {
            Some(base) => {
                if !base.starts_with("https://") {
                    return Err(WebhookConfigError::InsecureUrl { url: base.clone() });
                }
                WebhookClientConfig {
                    url: Some(format!("{}{path}", base.trim_end_matches('/'))),
                    ca_bundle,
                    service: None,
                }
            }
            None => WebhookClientConfig {
                service: Some(ServiceReference {
                    name: args.service.clone(),
                    namespace: args.namespace.clone(),
                    path: Some(path.to_string()),
                    port: Some(i32::from(args.port)),
                }),
                ca_bundle,
                url: None,
            },
        })
    };

    let validating = ValidatingWebhookConfiguration {
        metadata: metadata.clone(),
        webhooks: Some(vec![ValidatingWebhook {
            name: "validate.dbward.dev".to_string(),
            admission_review_versions: vec!["v1".to_string()],
            client_config: client_config(VALIDATE_PATH)?,
            failure_policy: Some(args.failure_policy.as_str().to_string()),
            match_policy: Some("Equivalent".to_string()),
            namespace_selector: Some(namespace_selector(&args.namespace)),
            rules: Some(vec![rule(&["CREATE", "UPDATE", "DELETE"])]),
            side_effects: "None".to_string(),
            timeout_seconds: Some(args.timeout_seconds),
            ..ValidatingWebhook::default()
        }]),
    };
    let mutating = MutatingWebhookConfiguration {
        metadata,
        webhooks: Some(vec![MutatingWebhook {
            name: "mutate.dbward.dev".to_string(),
            admission_review_versions: vec!["v1".to_string()],
            client_config: client_config(MUTATE_PATH)?,
            failure_policy: Some(args.failure_policy.as_str().to_string()),
            match_policy: Some("Equivalent".to_string()),
            namespace_selector: Some(namespace_selector(&args.namespace)),
            reinvocation_policy: Some("IfNeeded".to_string()),
            rules: Some(vec![rule(&["CREATE", "UPDATE"])]),
            side_effects: "None".to_string(),
            timeout_seconds: Some(args.timeout_seconds),
            ..MutatingWebhook::default()
        }]),
    };
    Ok((validating, mutating))
}

/// Every dbward kind, main resource only: `*/status` is not listed, so status writes by the
/// controllers never reach the webhook.
fn rule(operations: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![GROUP.to_string()]),
        api_versions: Some(vec![VERSION.to_string()]),
        operations: Some(operations.iter().map(|op| op.to_string()).collect()),
        resources: Some(KINDS.iter().map(|k| k.plural.to_string()).collect()),
        scope: Some("*".to_string()),
    }
}

/// Skips `kube-system` and dbward's own namespace, so the webhook can never lock out the
/// components that would repair it. (Cluster-scoped kinds are always sent.)
fn namespace_selector(operator_namespace: &str) -> LabelSelector {
    let mut skipped = vec!["kube-system".to_string()];
    if operator_namespace != "kube-system" {
        skipped.push(operator_namespace.to_string());
    }
    LabelSelector {
        match_expressions: Some(vec![
            LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".to_string(),
                operator: "NotIn".to_string(),
                values: Some(skipped),
            },
            LabelSelectorRequirement {
                key: SKIP_LABEL.to_string(),
                operator: "NotIn".to_string(),
                values: Some(vec!["skip".to_string()]),
            },
        ]),
        match_labels: None,
    }
}

/// The configurations as multi-document YAML.
pub fn render(
    args: &WebhookConfigArgs,
    ca_bundle: Option<&[u8]>,
) -> Result<String, WebhookConfigError> {
    let (validating, mutating) = configurations(args, ca_bundle)?;
    let mut out = String::from("# Generated by `dbward webhook-config`; do not edit.\n");
    out.push_str("---\n");
    out.push_str(&serde_yaml::to_string(&validating)?);
    out.push_str("---\n");
    out.push_str(&serde_yaml::to_string(&mutating)?);
    Ok(out)
}

/// Reads `--ca-bundle` and checks it holds a PEM certificate.
pub fn read_ca_bundle(path: &std::path::Path) -> Result<Vec<u8>, WebhookConfigError> {
    let pem = std::fs::read(path).map_err(|source| WebhookConfigError::ReadCaBundle {
        path: path.to_path_buf(),
        source,
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(WebhookConfigError::EmptyCaBundle {
            path: path.to_path_buf(),
        });
    }
    Ok(pem)
}

/// `dbward webhook-config`: print both configurations.
pub fn run_webhook_config(args: WebhookConfigArgs) -> Result<(), WebhookConfigError> {
    let ca_bundle = args.ca_bundle.as_deref().map(read_ca_bundle).transpose()?;
    print!("{}", render(&args, ca_bundle.as_deref())?);
    Ok(())
}
