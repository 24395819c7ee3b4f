//! The committed webhook configurations are what `dbward webhook-config` prints for the
//! defaults, and they say what the design asks of them.

use std::path::PathBuf;

use dbward::api::KINDS;
use dbward::webhook_config::{FailurePolicy, WebhookConfigArgs, render};
use serde_json::Value;

const COMMITTED: &str = "webhooks/dbward.yaml";

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(COMMITTED)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

#[test]
fn committed_configurations_match_the_generator() {
    let generated = render(&WebhookConfigArgs::default(), None).unwrap();
    if std::env::var_os("DBWARD_REGENERATE").is_some() {
        std::fs::write(committed_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        committed == generated,
        "{COMMITTED} is out of date with the code; regenerate it with\n  \
         DBWARD_REGENERATE=1 cargo test --test webhook_config\n\
         (or `dbward webhook-config > {COMMITTED}`) and commit the result"
    );
}

#[test]
fn configurations_cover_every_kind_but_never_status() {
    let docs = documents(&render(&WebhookConfigArgs::default(), None).unwrap());
    assert_eq!(docs.len(), 2);
    let plurals: Vec<&str> = KINDS.iter().map(|k| k.plural).collect();
    for (doc, kind, operations, path) in [
        (
            &docs[0],
            "ValidatingWebhookConfiguration",
            vec!["CREATE", "UPDATE", "DELETE"],
            "/validate",
        ),
        (
            &docs[1],
            "MutatingWebhookConfiguration",
            vec!["CREATE", "UPDATE"],
            "/mutate",
        ),
    ] {
        assert_eq!(doc["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(doc["kind"], kind);
        let webhooks = doc["webhooks"].as_array().unwrap();
        assert_eq!(webhooks.len(), 1);
        let webhook = &webhooks[0];
        assert_eq!(webhook["sideEffects"], "None");
        assert_eq!(
            webhook["admissionReviewVersions"],
            serde_json::json!(["v1"])
        );
        assert_eq!(webhook["matchPolicy"], "Equivalent");
        assert_eq!(webhook["failurePolicy"], "Fail");
        assert_eq!(webhook["timeoutSeconds"], 10);
        assert_eq!(webhook["clientConfig"]["service"]["name"], "dbward-webhook");
        assert_eq!(
            webhook["clientConfig"]["service"]["namespace"],
            "dbward-system"
        );
        assert_eq!(webhook["clientConfig"]["service"]["path"], path);
        let rule = &webhook["rules"][0];
        assert_eq!(rule["apiGroups"], serde_json::json!(["dbward.dev"]));
        assert_eq!(rule["operations"], serde_json::json!(operations));
        let resources: Vec<&str> = rule["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(resources, plurals);
        assert!(resources.iter().all(|r| !r.contains('/')), "{resources:?}");
        let skipped = &webhook["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(skipped["key"], "kubernetes.io/metadata.name");
        assert_eq!(skipped["operator"], "NotIn");
        assert_eq!(
            skipped["values"],
            serde_json::json!(["kube-system", "dbward-system"])
        );
    }
    assert_eq!(docs[1]["webhooks"][0]["reinvocationPolicy"], "IfNeeded");
    assert!(docs[0]["webhooks"][0].get("reinvocationPolicy").is_none());
}

#[test]
fn url_ca_bundle_and_policy_options() {
    let args = WebhookConfigArgs {
        url: Some("https://127.0.0.1:8443/".into()),
        failure_policy: FailurePolicy::Ignore,
        timeout_seconds: 5,
        ..WebhookConfigArgs::default()
    };
    let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let docs = documents(&render(&args, Some(pem)).unwrap());
    let config = &docs[0]["webhooks"][0]["clientConfig"];
    assert_eq!(config["url"], "https://127.0.0.1:8443/validate");
    assert!(config.get("service").is_none());
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(config["caBundle"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, pem);
    assert_eq!(
        docs[1]["webhooks"][0]["clientConfig"]["url"],
        "https://127.0.0.1:8443/mutate"
    );
    assert_eq!(docs[1]["webhooks"][0]["failurePolicy"], "Ignore");
    assert_eq!(docs[1]["webhooks"][0]["timeoutSeconds"], 5);

    let insecure = WebhookConfigArgs {
        url: Some("http://127.0.0.1:8443".into()),
        ..WebhookConfigArgs::default()
    };
    assert!(render(&insecure, None).is_err());
}
