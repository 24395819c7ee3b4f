"""scripts/chart-render: the chart's manifests on stdout (see the script's header)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helm_python  # noqa: E402
import yaml  # noqa: E402

import chart_support  # noqa: E402


def merge(into: dict, new: dict) -> dict:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/chart-render")
    parser.add_argument("--name", default="dbward")
    parser.add_argument("--namespace", "-n", default="dbward-system")
    parser.add_argument("--kube-version")
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--set-string", action="append", default=[])
    parser.add_argument("--set-json", action="append", default=[])
    parser.add_argument("--no-crds", action="store_true")
    args = parser.parse_args()

    values: dict = {}
    for path in args.values:
        merge(values, yaml.safe_load(Path(path).read_text()) or {})
    for expr in args.set:
        merge(values, helm_python.parse_set_string(expr))
    for expr in args.set_string:
        merge(values, helm_python.parse_set_string_values(expr))
    for expr in args.set_json:
        merge(values, helm_python.parse_set_json(expr))
    if args.no_crds:
        merge(values, {"crds": {"install": False}})
    try:
        rendered = chart_support.render(
            values, name=args.name, namespace=args.namespace, kube_version=args.kube_version
        )
    except helm_python.errors.HelmError as error:
        print(f"scripts/chart-render: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(chart_support.manifest_text(rendered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
