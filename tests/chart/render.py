#!/usr/bin/env python3
"""Renders the keymount chart with the Helm SDK (helm-python-sdk) and checks custom resources
against the CRD schemas. Called by tests/chart.rs.

  render.py render CHART --values JSON --kube-version V [--name N] [--namespace NS] [--crds]
      prints the rendered objects as one YAML stream (`# Source:` before each document,
      templates in path order; with --crds the chart's crds/ first; NOTES.txt left out, as
      `helm install` and `helm template` leave it out of the manifest)
  render.py lint CHART --values JSON --kube-version V
      `helm lint --strict`; fails on any warning or error
  render.py check-crs CRDS_YAML FILE...
      validates every custom resource in FILE... against the openAPIV3Schema of its version in
      CRDS_YAML, strictly: a field the schema does not name is an error
"""

import argparse
import json
import sys

import helm_python
import jsonschema
import yaml
from helm_python import _native


def render(args):
    chart = helm_python.Chart.load(args.chart)
    # Chart.render() has no way to set the cluster version; the library's render options
    # do (`kube_version`, as `helm template --kube-version`), so call it directly.
    opts = {"name": args.name, "namespace": args.namespace, "kube_version": args.kube_version}
    values = json.loads(args.values)
    chart.validate_schema(values)
    rendered = json.loads(
        _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
    )
    out = []
    if args.crds:
        for crd in sorted(chart.crds, key=lambda c: c["filename"]):
            out.append((crd["filename"], crd["data"]))
    for path in sorted(rendered):
        # Helm's NOTES.txt is text printed after an install, never a manifest.
        if path.endswith("/NOTES.txt"):
            continue
        out.append((path, rendered[path]))
    for path, text in out:
        for doc in split_docs(text):
            sys.stdout.write(f"---\n# Source: {path}\n{doc}\n")


def split_docs(text):
    """The non-empty documents of a YAML stream, comments kept, surrounding blank lines cut."""
    docs, current = [], []
    for line in text.splitlines():
        if line.strip() == "---":
            docs.append(current)
            current = []
        else:
            current.append(line)
    docs.append(current)
    result = []
    for lines in docs:
        body = "\n".join(lines).strip("\n")
        if yaml.safe_load(body) is not None:
            result.append(body)
    return result


def strict(schema):
    """The schema with unknown fields refused wherever it names its fields."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema.setdefault("additionalProperties", False)
        schema.pop("nullable", None)
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema




def check_crs(args):
    schemas = {}
    with open(args.crds) as f:
        for crd in yaml.safe_load_all(f):
            if not crd:
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (f'{spec["group"]}/{version["name"]}', spec["names"]["kind"])
                schema = strict(version["schema"]["openAPIV3Schema"])
                # The API server always accepts these at the root, schema or not.
                implicit = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                            "metadata": {"type": "object"}}
                schema["properties"] = {**implicit, **schema.get("properties", {})}
                schemas[key] = schema
    failures = 0
    checked = 0
    for path in args.files:
        with open(path) as f:
            for obj in yaml.safe_load_all(f):
                if not obj:
                    continue
                key = (obj.get("apiVersion"), obj.get("kind"))
                name = f'{path}: {key[1]} {obj.get("metadata", {}).get("name")} ({key[0]})'
                schema = schemas.get(key)
                if schema is None:
                    print(f"ERROR {name}: no CRD version serves this apiVersion/kind")
                    failures += 1
                    continue
                errors = sorted(
                    jsonschema.Draft4Validator(schema).iter_errors(obj), key=lambda e: list(e.path)
                )
                for error in errors:
                    where = ".".join(str(p) for p in error.path) or "(root)"
                    print(f"ERROR {name}: {where}: {error.message}")
                failures += bool(errors)
                checked += 1
                if not errors:
                    print(f"OK {name}")
    print(f"{checked} custom resources checked, {failures} failed")
    return 1 if failures or not checked else 0


def lint(args):
    report = helm_python.lint(
        args.chart, json.loads(args.values), strict=True, namespace="kube-system",
        kube_version=args.kube_version,
    )
    bad = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    for message in report["messages"]:
        print(f'lint severity={message["severity"]} {message["path"]}: {message["error"]}')
    for error in report["errors"]:
        print(f"lint error: {error}")
    return 1 if bad or report["total_charts_linted"] != 1 else 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render")
    r.add_argument("chart")
    r.add_argument("--values", default="{}")
    r.add_argument("--kube-version", required=True)
    r.add_argument("--name", default="keymount")
    r.add_argument("--namespace", default="kube-system")
    r.add_argument("--crds", action="store_true")
    lnt = sub.add_parser("lint")
    lnt.add_argument("chart")
    lnt.add_argument("--values", default="{}")
    lnt.add_argument("--kube-version", required=True)
    c = sub.add_parser("check-crs")
    c.add_argument("crds")
    c.add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.cmd == "render":
        render(args)
        return 0
    if args.cmd == "lint":
        return lint(args)
    return check_crs(args)


if __name__ == "__main__":
    sys.exit(main())
