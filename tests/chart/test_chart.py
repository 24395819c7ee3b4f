"""The Helm chart (charts/dbward), rendered with Helm's own SDK for several value sets: lint,
Kubernetes schema validation for the oldest and newest versions the chart is checked against,
CRDs equal to crds/, the webhook configurations equal to `dbward webhook-config`'s, RBAC, the
values schema. Run by scripts/test's chart tier (scripts/chart-test)."""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

import chart_support as cs

CA_BUNDLE = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="

# The value sets every structural test renders.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "certManager": {"certificates": {"mode": "certManager"}},
    "certManager-issuerRef": {
        "certificates": {
            "mode": "certManager",
            "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}},
        }
    },
    "secret": {"certificates": {"mode": "secret", "secret": {"name": "my-tls", "caBundle": CA_BUNDLE}}},
    "webhook-url": {
        "webhook": {"url": "https://127.0.0.1:9443/", "failurePolicy": "Ignore", "timeoutSeconds": 5},
        "certificates": {"selfManaged": {"extraIPs": ["127.0.0.1"], "extraDNSNames": ["localhost"]}},
    },
    "serviceMonitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
    "policy": {
        "policy": {
            "create": True,
            "spec": {
                "rules": {"pool-size": "Warn", "min-resources": "Off"},
                "limits": {"maxPoolSize": 50, "allowedPoolModes": ["transaction"], "superuserAllowed": False},
                "adoptions": [{"serviceName": "shared-pg", "namespace": "team-a", "role": "legacy"}],
            },
        }
    },
    "crds-off": {"crds": {"install": False}},
    "one-replica": {"replicaCount": 1, "nameOverride": "db", "fullnameOverride": "acme-dbward"},
    "selector-additions": {
        "webhook": {
            "namespaceSelector": {
                "matchLabels": {"dbward.dev/tenant": "true"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]}],
            }
        }
    },
}

# Kinds kubernetes-validate has no schema for (custom resources); each is checked otherwise.
CUSTOM_KINDS = {"AdmissionPolicy", "ServiceMonitor", "Certificate", "Issuer"}


@functools.lru_cache(maxsize=None)
def _render(values_json: str, kw_json: str) -> str:
    return json.dumps(cs.render(json.loads(values_json), **json.loads(kw_json)))


def render(values: dict[str, Any], **kw) -> dict[str, str]:
    """cs.render, memoised: a render takes about a second (the CRDs go through Helm's YAML)."""
    return json.loads(_render(json.dumps(values, sort_keys=True), json.dumps(kw, sort_keys=True)))


def render_objects(values: dict[str, Any], **kw) -> list[dict[str, Any]]:
    return cs.objects(render(values, **kw))


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def one(objs, kind, name=None):
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --- lint ---------------------------------------------------------------------------------------------


LINTED = [(name, cs.NEWEST_SCHEMA) for name in sorted(VALUE_SETS)] + [
    ("defaults", cs.LOOPBACK), ("defaults", cs.OLDEST_SCHEMA)]


@pytest.mark.parametrize("name,kube_version", LINTED)
def test_lint_strict_is_clean(name, kube_version):
    report = helm_python.lint(
        str(cs.CHART), VALUE_SETS[name], strict=True, namespace="dbward-system", kube_version="v" + kube_version
    )
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"): the chart has no icon to point at.
    findings = [m for m in report["messages"] if m["severity"] >= 2]
    assert findings == []
    assert {m["error"] for m in report["messages"]} <= {"icon is recommended"}


# --- Kubernetes schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("kube_version", [cs.OLDEST_SCHEMA, cs.NEWEST_SCHEMA])
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_object_passes_kubernetes_validate_strict(name, kube_version):
    objs = render_objects(VALUE_SETS[name], kube_version=kube_version)
    assert objs
    for obj in objs:
        what = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "CustomResourceDefinition" and name != "defaults":
            continue  # the same in every value set; validated with the defaults (the slow part)
        if obj["kind"] in CUSTOM_KINDS:
            # Custom resources: checked by the tests below, not by Kubernetes' own schemas.
            with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
                kubernetes_validate.validate(obj, kube_version, strict=True)
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{what} against {kube_version}: {'.'.join(map(str, e.path))}: {e.message}")


def test_custom_resources_are_the_expected_ones():
    """The only kinds not checked against Kubernetes' schemas are these custom resources."""
    seen = set()
    for name, values in VALUE_SETS.items():
        for obj in render_objects(values, kube_version=cs.NEWEST_SCHEMA):
            if obj["kind"] in CUSTOM_KINDS:
                seen.add((obj["apiVersion"], obj["kind"]))
    assert seen == {
        ("dbward.dev/v1alpha1", "AdmissionPolicy"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("cert-manager.io/v1", "Certificate"),
        ("cert-manager.io/v1", "Issuer"),
    }


def test_admission_policy_matches_its_crd():
    objs = render_objects(VALUE_SETS["policy"])
    policy = one(objs, "AdmissionPolicy")
    assert policy["metadata"]["name"] == "default"
    assert "namespace" not in policy["metadata"]
    assert policy["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert policy["spec"] == VALUE_SETS["policy"]["policy"]["spec"]
    crd = cs.repo_crds()["admissionpolicies.dbward.dev"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate({"spec": policy["spec"]}, cs._values_schema(schema))
    assert not by_kind(render_objects({}), "AdmissionPolicy")


def test_loopback_version_gets_policy_v1beta1_pdb():
    """policy/v1 PodDisruptionBudgets exist from 1.21; the loopback API server is 1.20.2."""
    assert one(render_objects({}, kube_version=cs.LOOPBACK), "PodDisruptionBudget")["apiVersion"] == "policy/v1beta1"
    assert one(render_objects({}, kube_version="1.21.0"), "PodDisruptionBudget")["apiVersion"] == "policy/v1"
    assert one(render_objects({}, kube_version=cs.NEWEST_SCHEMA), "PodDisruptionBudget")["apiVersion"] == "policy/v1"


# --- CRDs ---------------------------------------------------------------------------------------------


def strip_chart_metadata(crd):
    crd = copy.deepcopy(crd)
    meta = crd["metadata"]
    meta.pop("labels", None)
    meta.get("annotations", {}).pop("helm.sh/resource-policy", None)
    if not meta.get("annotations"):
        meta.pop("annotations", None)
    return crd


def test_chart_crds_equal_the_repository_crds():
    """The rendered CRDs are crds/ (the output of `dbward crds`) object for object, plus the
    chart's labels and keep annotation. Fails when crds/ changed without scripts/chart-crds."""
    rendered = {c["metadata"]["name"]: c for c in by_kind(render_objects({}), "CustomResourceDefinition")}
    expected = cs.repo_crds()
    assert sorted(rendered) == sorted(expected)
    for name, crd in rendered.items():
        assert strip_chart_metadata(crd) == expected[name], f"{name} differs from crds/; run scripts/chart-crds"
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_crd_enums_survive_go_yaml():
    """Every enum value of a string field is still a string after Helm (Go's YAML 1.1) parsed
    the CRDs: an unquoted `Off` would have become `false`."""

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" in node:
                bad = [v for v in node["enum"] if not isinstance(v, str)]
                assert not bad, f"{path}: enum values {bad} are not strings"
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    for crd in by_kind(render_objects({}), "CustomResourceDefinition"):
        walk(crd["spec"], crd["metadata"]["name"])


def test_chart_crd_files_are_byte_copies():
    copies = sorted(p.name for p in cs.CHART_CRDS.glob("*.yaml"))
    assert copies == sorted(p.name for p in cs.CRDS.glob("*.yaml"))
    for name in copies:
        assert (cs.CHART_CRDS / name).read_bytes() == (cs.CRDS / name).read_bytes(), f"run scripts/chart-crds ({name})"


def test_crds_off_and_keep_off():
    assert not by_kind(render_objects({"crds": {"install": False}}), "CustomResourceDefinition")
    crds = by_kind(render_objects({"crds": {"keep": False}}), "CustomResourceDefinition")
    assert crds and all("helm.sh/resource-policy" not in c["metadata"].get("annotations", {}) for c in crds)


# --- webhook configurations -----------------------------------------------------------------------


def generated_configurations():
    docs = [d for d in yaml.safe_load_all((cs.REPO / "webhooks" / "dbward.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def test_webhook_configurations_equal_dbward_webhook_config():
    """With the defaults (release dbward in dbward-system), the configurations are exactly what
    `dbward webhook-config` prints (webhooks/dbward.yaml), apart from the chart's labels."""
    objs = render_objects({})
    for kind, expected in generated_configurations().items():
        got = one(objs, kind)
        assert got["metadata"]["name"] == expected["metadata"]["name"]
        assert got["metadata"]["labels"]["app.kubernetes.io/name"] == "dbward"
        assert "annotations" not in got["metadata"]
        assert got["webhooks"] == expected["webhooks"]


@pytest.mark.parametrize("name", ["defaults", "webhook-url", "serviceMonitor", "policy", "crds-off"])
def test_no_ca_bundle_in_self_managed_mode(name):
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for hook in one(render_objects(VALUE_SETS[name]), kind)["webhooks"]:
            assert "caBundle" not in hook["clientConfig"]


def test_webhook_url_mode():
    objs = render_objects(VALUE_SETS["webhook-url"])
    paths = {"ValidatingWebhookConfiguration": "/validate", "MutatingWebhookConfiguration": "/mutate"}
    for kind, path in paths.items():
        (hook,) = one(objs, kind)["webhooks"]
        assert hook["clientConfig"] == {"url": f"https://127.0.0.1:9443{path}"}
        assert hook["failurePolicy"] == "Ignore"
        assert hook["timeoutSeconds"] == 5
    args = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert pairs(args, "--certs-ip") == ["127.0.0.1"]
    assert pairs(args, "--certs-dns") == ["localhost"]


def test_cert_manager_mode():
    objs = render_objects(VALUE_SETS["certManager"])
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        conf = one(objs, kind)
        assert conf["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": "dbward-system/dbward-webhook"}
        assert all("caBundle" not in h["clientConfig"] for h in conf["webhooks"])
    serving = one(objs, "Certificate", "dbward-webhook")
    assert serving["spec"]["secretName"] == "dbward-webhook-tls"
    assert "dbward-webhook.dbward-system.svc" in serving["spec"]["dnsNames"]
    assert serving["spec"]["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": "dbward-ca"}
    ca = one(objs, "Certificate", "dbward-ca")
    assert ca["spec"]["isCA"] is True
    assert ca["spec"]["issuerRef"]["name"] == "dbward-selfsigned"
    assert one(objs, "Issuer", "dbward-selfsigned")["spec"] == {"selfSigned": {}}
    assert one(objs, "Issuer", "dbward-ca")["spec"] == {"ca": {"secretName": "dbward-webhook-ca"}}
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert "--self-managed-certs" not in pod["containers"][0]["args"]
    assert pod["volumes"] == [{"name": "tls", "secret": {"secretName": "dbward-webhook-tls", "defaultMode": 0o440}}]

    objs = render_objects(VALUE_SETS["certManager-issuerRef"])
    assert not by_kind(objs, "Issuer")
    assert [c["metadata"]["name"] for c in by_kind(objs, "Certificate")] == ["dbward-webhook"]
    assert one(objs, "Certificate")["spec"]["issuerRef"] == {
        "name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}


def test_secret_mode():
    objs = render_objects(VALUE_SETS["secret"])
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for hook in one(objs, kind)["webhooks"]:
            assert hook["clientConfig"]["caBundle"] == CA_BUNDLE
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "my-tls"
    assert not by_kind(objs, "Certificate")
    role = one(objs, "Role")
    assert all("resourceNames" not in r or r["resources"] != ["secrets"] for r in role["rules"])
    assert not any("admissionregistration.k8s.io" in r["apiGroups"] for r in one(objs, "ClusterRole")["rules"])


def test_namespace_selector_additions():
    objs = render_objects(VALUE_SETS["selector-additions"])
    sel = one(objs, "ValidatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"]
    assert sel["matchLabels"] == {"dbward.dev/tenant": "true"}
    assert sel["matchExpressions"][:2] == generated_configurations()["ValidatingWebhookConfiguration"]["webhooks"][0]["namespaceSelector"]["matchExpressions"]
    assert sel["matchExpressions"][2] == {"key": "env", "operator": "In", "values": ["prod", "staging"]}


def test_release_namespace_is_skipped():
    objs = render_objects({}, namespace="databases")
    sel = one(objs, "MutatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"]
    assert sel["matchExpressions"][0]["values"] == ["kube-system", "databases"]


# --- the Deployment -----------------------------------------------------------------------------------


def pairs(args, flag):
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_deployment_runs_dbward_run_with_the_agreed_flags():
    deploy = one(render_objects({}), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == [
        "run", "--namespace", "dbward-system", "--listen", "0.0.0.0:8443",
        "--metrics-listen", "0.0.0.0:8080",
        "--tls-cert", "/etc/dbward/tls/tls.crt", "--tls-key", "/etc/dbward/tls/tls.key",
        "--lease-name", "dbward-controller",
        "--lease-duration", "15s", "--renew-deadline", "10s", "--retry-period", "2s",
        "--self-managed-certs", "--service", "dbward-webhook",
        "--ca-secret", "dbward-webhook-ca", "--tls-secret", "dbward-webhook-tls",
        "--webhook-configuration", "dbward",
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert c["image"] == "localhost/dbward:0.1.0"
    assert pod["volumes"] == [{"name": "tls", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]
    assert c["volumeMounts"] == [{"name": "tls", "mountPath": "/etc/dbward/tls", "readOnly": False}]


def test_deployment_availability_and_security():
    objs = render_objects({})
    deploy = one(objs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"webhook": 8443, "metrics": 8080}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 65532 and sc["runAsGroup"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"]["podAntiAffinity"]
    assert terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": spec["selector"]["matchLabels"]}}


def test_selector_labels_are_name_and_instance_only():
    for values in ({}, {"image": {"tag": "9.9.9"}}):
        deploy = one(render_objects(values), "Deployment")
        assert deploy["spec"]["selector"]["matchLabels"] == {
            "app.kubernetes.io/name": "dbward", "app.kubernetes.io/instance": "dbward"}
    service = one(render_objects({}), "Service", "dbward-webhook")
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "dbward", "app.kubernetes.io/instance": "dbward"}
    assert service["spec"]["ports"] == [{"name": "https-webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]


def test_one_replica_has_no_pdb_and_names_follow_overrides():
    objs = render_objects(VALUE_SETS["one-replica"])
    assert not by_kind(objs, "PodDisruptionBudget")
    args = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert pairs(args, "--lease-name") == ["acme-dbward-controller"]
    assert pairs(args, "--webhook-configuration") == ["acme-dbward"]
    assert pairs(args, "--service") == ["acme-dbward-webhook"]
    assert one(objs, "ValidatingWebhookConfiguration")["metadata"]["name"] == "acme-dbward"


def test_release_names():
    objs = render_objects({}, name="prod")
    assert one(objs, "Deployment")["metadata"]["name"] == "prod-dbward"
    assert one(objs, "ValidatingWebhookConfiguration")["metadata"]["name"] == "prod-dbward"


def test_service_monitor():
    objs = render_objects(VALUE_SETS["serviceMonitor"])
    sm = one(objs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    svc = one(objs, "Service", "dbward-metrics")
    selector = sm["spec"]["selector"]["matchLabels"]
    assert all(svc["metadata"]["labels"][k] == v for k, v in selector.items())
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert not by_kind(render_objects({}), "ServiceMonitor")


# --- RBAC ---------------------------------------------------------------------------------------------


def all_rules(objs):
    return [(o["kind"], r) for o in objs if o["kind"] in ("ClusterRole", "Role") for r in o["rules"]]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rbac_has_no_wildcard(name):
    objs = render_objects(VALUE_SETS[name])
    for _, rule in all_rules(objs):
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), rule
            assert not any("*" in item for item in rule.get(field, [])), rule


def grants(objs, kind, group, resource):
    """verb → resourceNames (None: any name) for one resource."""
    out: dict[str, Any] = {}
    for k, rule in all_rules(objs):
        if k == kind and group in rule["apiGroups"] and resource in rule["resources"]:
            for verb in rule["verbs"]:
                names = rule.get("resourceNames")
                out[verb] = None if names is None or out.get(verb, ()) is None else sorted(set(out.get(verb, [])) | set(names))
    return out


def test_rbac_resource_names_where_intended():
    objs = render_objects({})
    conf = grants(objs, "ClusterRole", "admissionregistration.k8s.io", "validatingwebhookconfigurations")
    assert conf == {"get": ["dbward"], "patch": ["dbward"]}
    assert grants(objs, "ClusterRole", "admissionregistration.k8s.io", "mutatingwebhookconfigurations") == conf
    assert grants(objs, "Role", "coordination.k8s.io", "leases") == {
        "get": ["dbward-controller"], "update": ["dbward-controller"], "patch": ["dbward-controller"], "create": None}
    assert grants(objs, "Role", "", "secrets") == {
        "get": None, "list": None, "watch": None, "create": None, "delete": None,
        "update": ["dbward-webhook-ca", "dbward-webhook-tls"]}
    # The poolers' objects in dbward's namespace only; nothing cluster-wide.
    pooler = {v: None for v in ("get", "list", "watch", "create", "patch", "delete")}
    assert grants(objs, "Role", "apps", "deployments") == pooler
    assert grants(objs, "Role", "", "services") == pooler
    assert grants(objs, "Role", "", "configmaps") == pooler
    assert grants(objs, "Role", "", "pods") == {"list": None, "watch": None}
    # The poolers' cert-manager Certificates (ReconfigureTLS with issuerRef), in dbward's namespace.
    assert grants(objs, "Role", "cert-manager.io", "certificates") == {
        v: None for v in ("get", "create", "patch", "delete")}
    assert grants(objs, "ClusterRole", "cert-manager.io", "certificates") == {}
    assert grants(objs, "ClusterRole", "apps", "deployments") == {}
    # PostgresClusters' objects, in the tenants' namespaces: no delete but the PDB's.
    assert grants(objs, "ClusterRole", "apps", "statefulsets") == {v: None for v in ("get", "create", "patch")}
    assert grants(objs, "ClusterRole", "", "services") == {v: None for v in ("get", "create", "patch")}
    # ConfigMaps: a PostgresCluster's (get, create, patch) and DatabaseQueryResources' children
    # in any namespace (get, list, create, patch, delete).
    assert grants(objs, "ClusterRole", "", "configmaps") == {
        v: None for v in ("get", "create", "patch", "list", "delete")}
    assert grants(objs, "ClusterRole", "policy", "poddisruptionbudgets") == {
        v: None for v in ("get", "create", "patch", "delete")}
    for resource in ("persistentvolumeclaims", "pods"):
        assert grants(objs, "ClusterRole", "", resource) == {"list": None, "patch": None}
    assert grants(objs, "ClusterRole", "", "secrets") == {
        "get": None, "create": None, "patch": None, "delete": None, "list": None, "watch": None}
    for kind in ("databaseservices", "databases", "serviceusers", "connectionpools", "databaseclaims",
                 "postgresclusters", "databasequeryresources", "databaseopsrequests", "admissionpolicies"):
        assert grants(objs, "ClusterRole", "dbward.dev", kind) == {
            v: None for v in ("get", "list", "watch", "patch", "update")}
        assert grants(objs, "ClusterRole", "dbward.dev", f"{kind}/status") == {
            v: None for v in ("get", "patch", "update")}
        assert grants(objs, "ClusterRole", "dbward.dev", f"{kind}/finalizers") == {"update": None}
    assert grants(objs, "ClusterRole", "", "namespaces") == {v: None for v in ("get", "list", "watch")}
    assert grants(objs, "ClusterRole", "", "events") == {"create": None, "patch": None}
    assert grants(objs, "ClusterRole", "events.k8s.io", "events") == {"create": None, "patch": None}
    # No rule names a verb the API server lets a name limit but leaves the name out, except
    # create (never limited by name) and the collection verbs.
    for kind, rule in all_rules(objs):
        if "resourceNames" not in rule and rule["resources"] in (["leases"],):
            assert rule["verbs"] == ["create"]


def test_rbac_follows_the_query_resource_kinds():
    objs = render_objects({"rbac": {"queryResourceKinds": [
        {"apiGroups": [""], "resources": ["configmaps"]},
        {"apiGroups": ["apps"], "resources": ["deployments"]}]}})
    children = {v: None for v in ("get", "list", "create", "patch", "delete")}
    assert grants(objs, "ClusterRole", "apps", "deployments") == children
    # Without them, ConfigMaps keep only a PostgresCluster's verbs.
    objs = render_objects({"rbac": {"queryResourceKinds": []}})
    assert grants(objs, "ClusterRole", "", "configmaps") == {v: None for v in ("get", "create", "patch")}


def test_rbac_subjects_are_the_service_account():
    objs = render_objects({})
    sa = one(objs, "ServiceAccount")
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        binding = one(objs, kind)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "dbward-system"}]
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_rbac_off():
    objs = render_objects({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}})
    assert not [o for o in objs if o["apiVersion"].startswith("rbac.")]
    assert not by_kind(objs, "ServiceAccount")


# --- values schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"unknownTopLevel": 1},
        {"image": {"repo": "x"}},
        {"certificates": {"mode": "selfManaged", "selfManged": {}}},
        {"certificates": {"certManager": {"issuerRef": {"name": "x", "kind": "Issuer", "extra": 1}}}},
        {"webhook": {"namespaceSelector": {"matchExpression": []}}},
        {"webhook": {"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In", "value": []}]}}},
        {"metrics": {"serviceMonitor": {"enable": True}}},
        {"policy": {"spec": {"limits": {"maxPoolSzie": 3}}}},
        {"policy": {"spec": {"unknown": {}}}},
        {"policy": {"spec": {"adoptions": [{"serviceName": "s", "namespace": "n", "owner": "x"}]}}},
        {"leaderElection": {"leaseDuratoin": "15s"}},
        {"resources": {"requests": {"cpu": "1", "gpu": 1}}},
        {"podDisruptionBudget": {"maxUnavailable": 1}},
        {"crds": {"upgrade": True}},
    ],
)
def test_schema_refuses_unknown_keys(values):
    chart = helm_python.Chart.load(str(cs.CHART))
    try:
        with pytest.raises(helm_python.errors.HelmError):
            chart.validate_schema(values)
    finally:
        chart.close()


@pytest.mark.parametrize(
    "values",
    [
        {"certificates": {"mode": "vault"}},
        {"certificates": {"mode": "secret"}},
        {"webhook": {"failurePolicy": "Sometimes"}},
        {"webhook": {"timeoutSeconds": 31}},
        {"webhook": {"url": "http://127.0.0.1:9443/"}},
        {"policy": {"spec": {"rules": {"x": "Deny"}}}},
        {"replicaCount": 0},
        {"leaderElection": {"leaseDuration": "fifteen"}},
    ],
)
def test_schema_refuses_bad_values(values):
    chart = helm_python.Chart.load(str(cs.CHART))
    try:
        with pytest.raises(helm_python.errors.HelmError):
            chart.validate_schema(values)
    finally:
        chart.close()


def test_every_value_set_passes_the_schema():
    chart = helm_python.Chart.load(str(cs.CHART))
    try:
        for values in VALUE_SETS.values():
            chart.validate_schema(values)
    finally:
        chart.close()


def schema_objects_without_closure(node, path="$"):
    """Paths of schema objects that list properties but do not refuse others."""
    out = []
    if isinstance(node, dict):
        if "properties" in node and node.get("additionalProperties") is not False:
            out.append(path)
        for key, value in node.items():
            out += schema_objects_without_closure(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += schema_objects_without_closure(value, f"{path}[{i}]")
    return out


def test_schema_closes_every_object_it_defines():
    schema = json.loads(cs.SCHEMA.read_text())
    # The if/then of the secret mode adds constraints to an object closed where it is defined.
    open_ = [p for p in schema_objects_without_closure(schema) if ".allOf[" not in p]
    assert open_ == []


def test_schema_covers_values_yaml():
    """Every key of values.yaml is in the schema and every key the schema defines is in
    values.yaml (documented there), and the defaults pass it. (Resource lists are open to
    the names Kubernetes knows, not all of which a default sets.)"""
    schema = json.loads(cs.SCHEMA.read_text())
    values = yaml.safe_load((cs.CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)

    def keys(node, schema_node, path):
        if "$ref" in schema_node:
            ref = schema_node["$ref"].split("/")[-1]
            schema_node = schema["definitions"][ref]
        props = schema_node.get("properties")
        if isinstance(node, dict) and node and props is not None and not path.startswith("values.resources."):
            assert set(node) == set(props), f"{path}: {set(node) ^ set(props)}"
            for k, v in node.items():
                keys(v, props[k], f"{path}.{k}")

    keys(values, schema, "values")


def test_policy_schema_is_the_crd_spec():
    """values.schema.json's policySpec is derived from the AdmissionPolicy CRD (scripts/chart-crds)."""
    schema = json.loads(cs.SCHEMA.read_text())
    assert schema["definitions"]["policySpec"] == cs.policy_spec_schema(), "run scripts/chart-crds"


def test_app_version_is_the_crate_version():
    chart = yaml.safe_load((cs.CHART / "Chart.yaml").read_text())
    cargo = (cs.REPO / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    assert chart["appVersion"] == version
    assert chart["apiVersion"] == "v2"


def test_notes_render():
    for name, values in VALUE_SETS.items():
        notes = render(values)["dbward/templates/NOTES.txt"]
        assert "dbward-controller" in notes, name


# --- scripts/chart-render -----------------------------------------------------------------------------


def test_chart_render_script():
    """What the end-to-end suite calls: the loopback API server's version, a webhook by URL."""
    import subprocess

    out = subprocess.run(
        [str(cs.REPO / "scripts" / "chart-render"), "--kube-version", cs.LOOPBACK, "--namespace", "e2e-dbward",
         "--set", "webhook.url=https://127.0.0.1:9443/", "--set", "certificates.selfManaged.extraIPs={127.0.0.1}",
         "--set-json", 'webhook.namespaceSelector.matchLabels={"a":"b"}'],
        check=True, capture_output=True, text=True,
    ).stdout
    objs = [d for d in yaml.safe_load_all(out) if d]
    assert one(objs, "PodDisruptionBudget")["apiVersion"] == "policy/v1beta1"
    (hook,) = one(objs, "ValidatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"] == {"url": "https://127.0.0.1:9443/validate"}
    assert hook["namespaceSelector"]["matchLabels"] == {"a": "b"}
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", "e2e-dbward"]
    args = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert pairs(args, "--certs-ip") == ["127.0.0.1"]
    assert len(by_kind(objs, "CustomResourceDefinition")) == 9
    assert out.startswith("---\n# Source: dbward/templates/")

    bad = subprocess.run([str(cs.REPO / "scripts" / "chart-render"), "--set", "webhook.nope=1"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "nope" in bad.stderr
