use serde_json::json;

use super::*;

fn rules(allowed: &[String], cross: bool) -> ChildRules<'_> {
    ChildRules {
        namespace: "team-a",
        allowed_kinds: allowed,
        cross_namespace_allowed: cross,
    }
}

fn config_map(metadata: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"a": "b"}})
}

fn refused(object: Value, allowed: &[String], expected: &str) -> ChildError {
    let error = check_child(object, &rules(allowed, false)).unwrap_err();
    assert!(error.message.contains(expected), "{error}");
    error
}

#[test]
fn qualified_kinds_spell_the_core_group_without_prefix() {
    assert_eq!(qualified_kind("v1", "ConfigMap"), "ConfigMap");
    assert_eq!(qualified_kind("apps/v1", "Deployment"), "apps/Deployment");
    assert_eq!(
        qualified_kind("networking.k8s.io/v1", "Ingress"),
        "networking.k8s.io/Ingress"
    );
}

#[test]
fn an_allowed_object_passes_unchanged() {
    let allowed = ["ConfigMap".to_string()];
    let object = config_map(json!({"name": "user-a", "labels": {"app": "x"}}));
    let child = check_child(object.clone(), &rules(&allowed, false)).unwrap();
    assert_eq!(
        child,
        Child {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: None,
            name: "user-a".into(),
            object,
        }
    );
    let here = config_map(json!({"name": "user-a", "namespace": "team-a"}));
    let child = check_child(here, &rules(&allowed, false)).unwrap();
    assert_eq!(child.namespace.as_deref(), Some("team-a"));
}

#[test]
fn kinds_outside_the_allow_list_are_refused_with_the_list() {
    let allowed = ["ConfigMap".to_string(), "apps/Deployment".to_string()];
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "x"}});
    let error = refused(
        role,
        &allowed,
        "kind rbac.authorization.k8s.io/ClusterRole is not allowed",
    );
    assert!(error.message.contains("allows ConfigMap, apps/Deployment"));
    assert_eq!(error.name.as_deref(), Some("x"));
    // The group matters: a Deployment of another group is another kind.
    let other =
        json!({"apiVersion": "example.com/v1", "kind": "Deployment", "metadata": {"name": "x"}});
    refused(
        other,
        &allowed,
        "kind example.com/Deployment is not allowed",
    );
}

#[test]
fn other_namespaces_need_the_policy() {
    let allowed = ["ConfigMap".to_string()];
    let elsewhere = config_map(json!({"name": "x", "namespace": "kube-system"}));
    refused(
        elsewhere.clone(),
        &allowed,
        "metadata.namespace \"kube-system\" is not allowed: only \"team-a\"",
    );
    let child = check_child(elsewhere, &rules(&allowed, true)).unwrap();
    assert_eq!(child.namespace.as_deref(), Some("kube-system"));
    let bad = config_map(json!({"name": "x", "namespace": "a.b"}));
    let error = check_child(bad, &rules(&allowed, true)).unwrap_err();
    assert!(error.message.contains("is not a namespace name"), "{error}");
}

#[test]
fn names_are_dns_subdomains() {
    let allowed = ["ConfigMap".to_string()];
    for name in ["User-A", "-a", "a-", "a..b", "a_b", ""] {
        let error = refused(config_map(json!({"name": name})), &allowed, "metadata.name");
        assert_eq!(error.name, None, "{name}");
    }
    refused(
        config_map(json!({"name": "a".repeat(254)})),
        &allowed,
        "must be 1 to 253 characters long",
    );
    assert!(
        check_child(
            config_map(json!({"name": "a".repeat(253)})),
            &rules(&allowed, false)
        )
        .is_ok()
    );
    assert!(
        check_child(
            config_map(json!({"name": "user-1.example"})),
            &rules(&allowed, false)
        )
        .is_ok()
    );
    refused(config_map(json!({})), &allowed, "metadata.name is required");
    refused(
        config_map(json!({"name": 5})),
        &allowed,
        "metadata.name must be a string",
    );
}

#[test]
fn fields_only_the_server_or_dbward_sets_are_refused() {
    let allowed = ["ConfigMap".to_string()];
    for (field, value, expected) in [
        (
            "ownerReferences",
            json!([]),
            "metadata.ownerReferences must not be set",
        ),
        (
            "finalizers",
            json!(["x"]),
            "metadata.finalizers must not be set",
        ),
        (
            "generateName",
            json!("x-"),
            "metadata.generateName must not be set",
        ),
        ("uid", json!("1"), "metadata.uid must not be set"),
        (
            "resourceVersion",
            json!("1"),
            "metadata.resourceVersion must not be set",
        ),
        (
            "managedFields",
            json!([]),
            "metadata.managedFields must not be set",
        ),
        (
            "deletionTimestamp",
            json!("x"),
            "metadata.deletionTimestamp must not be set",
        ),
    ] {
        let error = refused(
            config_map(json!({"name": "x", field: value})),
            &allowed,
            expected,
        );
        assert_eq!(error.name.as_deref(), Some("x"));
    }
    for key in [
        "dbward.dev/managed-by",
        "postgresql.dbward.dev/x",
        "DBWARD.DEV/x",
    ] {
        refused(
            config_map(json!({"name": "x", "labels": {key: "y"}})),
            &allowed,
            &format!("metadata.labels[{key}] must not be set"),
        );
        refused(
            config_map(json!({"name": "x", "annotations": {key: "y"}})),
            &allowed,
            &format!("metadata.annotations[{key}] must not be set"),
        );
    }
    let fine =
        config_map(json!({"name": "x", "labels": {"notdbward.dev/x": "y", "dbward.dev": "y"}}));
    assert!(check_child(fine, &rules(&allowed, false)).is_ok());
    refused(
        config_map(json!({"name": "x", "labels": {"n": 5}})),
        &allowed,
        "metadata.labels[n] must be a string, found 5",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let object = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x", "namespace": "other", "finalizers": []}});
    let error = refused(
        object,
        &["ConfigMap".to_string()],
        "kind Secret is not allowed",
    );
    for problem in ["metadata.namespace \"other\"", "metadata.finalizers"] {
        assert!(error.message.contains(problem), "{error}");
    }
    for shape in [
        json!([]),
        json!({"kind": "ConfigMap"}),
        json!({"apiVersion": "v1", "kind": 3, "metadata": {"name": "x"}}),
    ] {
        assert!(check_child(shape, &rules(&["ConfigMap".to_string()], false)).is_err());
    }
}
