"""Renders charts/dbward with Helm's own SDK (helm-python-sdk) and derives what the chart
copies from the crate's generated files (the CRDs, the AdmissionPolicy schema).

Used by tests/chart/test_chart.py, scripts/chart-render and scripts/chart-crds."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "dbward"
CRDS = REPO / "crds"
CHART_CRDS = CHART / "files" / "crds"
SCHEMA = CHART / "values.schema.json"

# The oldest and newest Kubernetes the chart's objects are validated against (the schemas
# kubernetes-validate ships), and the loopback API server's version (for the PDB fallback).
OLDEST_SCHEMA = "1.25.0"
NEWEST_SCHEMA = "1.37.0"
LOOPBACK = "1.20.2"


def render(
    values: dict[str, Any] | None = None,
    *,
    name: str = "dbward",
    namespace: str = "dbward-system",
    kube_version: str | None = None,
) -> dict[str, str]:
    """Template path → rendered text, as `helm template` gives it.

    `Chart.render` of helm-python-sdk 0.2.2 does not forward `kube_version`, which its native
    `helm_render` accepts (the capabilities' KubeVersion), so this calls the native entry
    point with the same arguments `Chart.render` passes plus that one."""
    import helm_python
    from helm_python import _native

    chart = helm_python.Chart.load(str(CHART))
    try:
        chart.validate_schema(values or {})
        opts: dict[str, Any] = {"name": name, "namespace": namespace, "is_install": True}
        if kube_version:
            opts["kube_version"] = kube_version if kube_version.startswith("v") else "v" + kube_version
        rendered = _native.call_string(
            "helm_render", chart._raw(), json.dumps(values or {}), json.dumps(opts)
        )
        return json.loads(rendered)
    finally:
        chart.close()


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every object of a render (NOTES.txt and empty documents left out), in template order."""
    out = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(rendered[path]):
            if doc:
                out.append(doc)
    return out


def manifest_text(rendered: dict[str, str]) -> str:
    """The render as one multi-document YAML stream, with a `# Source:` line per template."""
    parts = []
    for path in sorted(rendered):
        text = rendered[path].strip()
        if path.endswith("NOTES.txt") or not text:
            continue
        for doc in text.split("\n---"):
            doc = doc.strip().removeprefix("---").strip()
            if doc and any(line and not line.startswith("#") for line in doc.splitlines()):
                parts.append(f"---\n# Source: {path}\n{doc}\n")
    return "".join(parts)


def repo_crds() -> dict[str, dict[str, Any]]:
    """The repository's CRDs (`dbward crds`), by name."""
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[doc["metadata"]["name"]] = doc
    return out


_KEEP = {
    "type", "properties", "items", "enum", "pattern", "minLength", "maxLength", "minimum",
    "maximum", "minItems", "maxItems", "required", "additionalProperties", "description",
}


def _values_schema(node: dict[str, Any]) -> dict[str, Any]:
    """One OpenAPI v3 (structural) schema node as JSON Schema for values: unknown keys refused
    wherever properties are listed, `nullable` as a null type, defaults and formats left out."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "description":
            out[key] = value.splitlines()[0] if value else value
        elif key == "properties":
            out[key] = {k: _values_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _values_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def policy_spec_schema() -> dict[str, Any]:
    """`policy.spec` of values.schema.json: the AdmissionPolicy CRD's `spec` schema."""
    crd = repo_crds()["admissionpolicies.dbward.dev"]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return _values_schema(spec)


def sync() -> list[str]:
    """Copies crds/ into the chart and regenerates `policySpec` in values.schema.json; returns
    what changed."""
    changed = []
    CHART_CRDS.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in CRDS.glob("*.yaml")}
    for stale in CHART_CRDS.glob("*.yaml"):
        if stale.name not in wanted:
            stale.unlink()
            changed.append(str(stale.relative_to(REPO)))
    for source in sorted(CRDS.glob("*.yaml")):
        target = CHART_CRDS / source.name
        if not target.exists() or target.read_bytes() != source.read_bytes():
            target.write_bytes(source.read_bytes())
            changed.append(str(target.relative_to(REPO)))
    schema = json.loads(SCHEMA.read_text())
    if schema["definitions"].get("policySpec") != policy_spec_schema():
        schema["definitions"]["policySpec"] = policy_spec_schema()
        SCHEMA.write_text(json.dumps(schema, indent=2) + "\n")
        changed.append(str(SCHEMA.relative_to(REPO)))
    return changed
