#!/usr/bin/env python3
"""Renders deploy/helm/walletd offline and checks what comes out (run by scripts/check-helm.sh).

For each values set (the defaults, each region's file, and a few variants): `helm lint --strict`,
`helm template` (both through helm-python-sdk, which embeds Helm's Go SDK: no helm binary, no
cluster), then every rendered object is validated against the Kubernetes JSON schemas
(kubernetes-validate, strict: an unknown field fails) for the oldest and the newest Kubernetes the
chart claims, and the two CRD kinds the chart renders (ServiceMonitor, PrometheusRule) against the
small strict schemas in deploy/helm/crd-schemas/. Then walletd-specific checks: every WALLETD_* name
the chart sets is a setting walletd declares (crates/settings/src/table.rs), every reference inside
the release resolves (Services, PDBs and HPAs find their pods, ConfigMaps, ServiceAccounts and the
gRPC URLs exist), every Deployment has probes, resources and the hardened security context, the
PrometheusRule is exactly deploy/prometheus/walletd-rules.yml, the chains file is valid TOML.
The rendered YAML goes to --out (one file per values set) for checkov.

Exit status: 0 when everything passed, 1 otherwise (every problem is printed first).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import sys
import tempfile
import tomllib
from collections import Counter
from pathlib import Path

import helm_python
import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy/helm/walletd"
CRD_SCHEMAS = REPO / "deploy/helm/crd-schemas"
SETTINGS_TABLE = REPO / "crates/settings/src/table.rs"
SETTINGS_LOAD = REPO / "crates/settings/src/load.rs"
RULES = REPO / "deploy/prometheus/walletd-rules.yml"

RELEASE = "walletd"
NAMESPACE = "walletd"
# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the newest the pinned
# kubernetes-validate ships schemas for.
KUBE_VERSIONS = ("1.31", "1.37")
# What the release pipeline passes: production deploys by digest (image.requireDigest in the region
# files). Any well-formed digest renders the same manifests.
PIPELINE_DIGEST = "sha256:" + "0123456789abcdef" * 4

CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
}

# README's example chains file (section "Chains").
SAMPLE_CHAINS = """\
[[chain]]
name = "sepolia"
chain_id = 11155111
rpc_url = "https://rpc.example"
confirmations = 12
start_block = 7000000
xpub = "xpub6..."

[[chain.asset]]
currency = "ETH"
native = true
"""

# (name, values files in -f order, --set style overrides)
SCENARIOS: list[tuple[str, list[str], dict]] = [
    ("default", [], {"image": {"digest": PIPELINE_DIGEST}}),
    ("us-east1", ["values-us-east1.yaml"], {"image": {"digest": PIPELINE_DIGEST}}),
    ("europe-west1", ["values-europe-west1.yaml"], {"image": {"digest": PIPELINE_DIGEST}}),
    ("asia-southeast1", ["values-asia-southeast1.yaml"], {"image": {"digest": PIPELINE_DIGEST}}),
    # The other branches: the signer's key in the environment, one database for every service (one
    # relay, one migration), the chains file from values (a ConfigMap), rotation keys published.
    (
        "us-east1-variant",
        ["values-us-east1.yaml"],
        {
            "image": {"digest": PIPELINE_DIGEST},
            "chains": {"existingSecret": "", "config": SAMPLE_CHAINS, "signer": {"keyDelivery": "env"}},
            "databases": {"identity": False, "supply": False, "order": False, "claim": False, "wallet": False},
            "jwt": {"publishedKeyKeys": ["next.pub.pem"]},
        },
    ),
]

# Values sets that must NOT render, with a piece of the error each must give: the guards work.
MUST_FAIL: list[tuple[str, list[str], dict, str]] = [
    ("region without a digest", ["values-us-east1.yaml"], {}, "image.requireDigest"),
    ("a malformed digest", [], {"image": {"digest": "sha256:abc"}}, "values don't meet the specifications of the schema"),
    ("a misspelt role setting", [], {"api": {"supply": {"replica": 3}}}, "values don't meet the specifications of the schema"),
    ("a database URL in config", [], {"config": {"WALLETD_DATABASE_URL": "postgres://x"}}, "database URLs carry passwords"),
    ("a signer without its Secret", [], {"chains": {"enabled": True, "config": "x = 1", "signer": {"enabled": True}}}, "chains.signer.existingSecret"),
]


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")
        print(f"FAIL {where}: {what}", flush=True)


def deep_merge(base: dict, over: dict) -> dict:
    """Helm's merge of -f files and --set: maps merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def user_values(files: list[str], overrides: dict) -> dict:
    values: dict = {}
    for f in files:
        # Parsed by Helm's own YAML reader, as `helm -f` does.
        values = deep_merge(values, helm_python.values_from_yaml((CHART / f).read_text()))
    return deep_merge(values, overrides)


def declared_settings() -> set[str]:
    """WALLETD_* names walletd accepts: its settings table plus the names it reads but are no setting."""
    names = {"WALLETD_" + k.upper() for k in re.findall(r'setting\(\s*"([a-z0-9_]+)"', SETTINGS_TABLE.read_text())}
    m = re.search(r"NOT_SETTINGS: &\[&str\] = &\[(.*?)\];", SETTINGS_LOAD.read_text(), re.S)
    not_settings = re.findall(r'"([A-Z0-9_*]+)"', m.group(1)) if m else []
    return names | set(not_settings)


def crd_validators() -> dict:
    common = json.loads((CRD_SCHEMAS / "common.json").read_text())
    registry = Registry().with_resource(common["$id"], Resource.from_contents(common))
    out = {}
    for key, file in CRD_KINDS.items():
        schema = json.loads((CRD_SCHEMAS / file).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
        out[key] = jsonschema.Draft202012Validator(schema, registry=registry)
    return out


def label_match(selector: dict, labels: dict) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        value, op = labels.get(e["key"]), e["operator"]
        if op == "In" and value not in e.get("values", []):
            return False
        if op == "NotIn" and value in e.get("values", []):
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def pod_specs(objs: list[dict]):
    for o in objs:
        if o["kind"] in ("Deployment", "Job"):
            yield o, o["spec"]["template"]


def check_release(scenario: str, objs: list[dict], settings: set[str], problems: Problems) -> list[str]:
    """walletd-specific checks on one rendered release; returns the Secrets it expects to exist."""
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
        if o["metadata"].get("namespace") != NAMESPACE:
            problems.add(f"{scenario} {o['kind']}/{o['metadata']['name']}", "metadata.namespace is not the release's")
    deployments = by_kind.get("Deployment", {})
    pods = [(o, t) for o, t in pod_specs(objs)]

    # WALLETD_* names: declared settings only (walletd refuses a near miss at start).
    for cm in by_kind.get("ConfigMap", {}).values():
        for k in cm.get("data", {}):
            if k.startswith("WALLETD_") and k not in settings:
                problems.add(f"{scenario} ConfigMap/{cm['metadata']['name']}", f"{k} is not a walletd setting")
    for o, t in pods:
        for c in t["spec"]["containers"]:
            for e in c.get("env", []):
                if e["name"].startswith("WALLETD_") and e["name"] not in settings:
                    problems.add(f"{scenario} {o['kind']}/{o['metadata']['name']}", f"env {e['name']} is not a walletd setting")

    # Every long-running container: probes, resources, the hardened security context; every pod:
    # no service account token, non-root, Secret volumes not readable by others.
    for o, t in pods:
        where = f"{scenario} {o['kind']}/{o['metadata']['name']}"
        spec = t["spec"]
        if spec.get("automountServiceAccountToken") is not False:
            problems.add(where, "automountServiceAccountToken is not false")
        psc = spec.get("securityContext", {})
        if not (psc.get("runAsNonRoot") and psc.get("runAsUser") == 65532 and psc.get("fsGroup") == 65532):
            problems.add(where, "the pod does not run as 65532 with fsGroup 65532")
        for v in spec.get("volumes", []):
            mode = (v.get("secret") or {}).get("defaultMode")
            if "secret" in v and (mode is None or mode & 0o077):
                problems.add(where, f"Secret volume {v['name']} has defaultMode {mode!r}, not 0400")
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            ok = (
                sc.get("readOnlyRootFilesystem") is True
                and sc.get("allowPrivilegeEscalation") is False
                and sc.get("runAsNonRoot") is True
                and sc.get("capabilities", {}).get("drop") == ["ALL"]
                and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
            )
            if not ok:
                problems.add(where, f"container {c['name']} lacks the hardened securityContext")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(part, {}):
                        problems.add(where, f"container {c['name']} has no {part}.{r}")
            if o["kind"] == "Deployment":
                for p in ("livenessProbe", "readinessProbe"):
                    if p not in c:
                        problems.add(where, f"container {c['name']} has no {p}")
            for ref in c.get("envFrom", []):
                name = (ref.get("configMapRef") or {}).get("name")
                if name and name not in by_kind.get("ConfigMap", {}):
                    problems.add(where, f"envFrom names ConfigMap {name}, which the release does not render")
        sa = spec.get("serviceAccountName")
        if sa not in by_kind.get("ServiceAccount", {}):
            problems.add(where, f"serviceAccountName {sa} is not rendered")
        if o["kind"] == "Deployment":
            grace = spec.get("terminationGracePeriodSeconds", 30)
            cms = [c for c in by_kind.get("ConfigMap", {}).values() if "WALLETD_SHUTDOWN_TIMEOUT_SECS" in c.get("data", {})]
            if cms and grace <= int(cms[0]["data"]["WALLETD_SHUTDOWN_TIMEOUT_SECS"]):
                problems.add(where, f"terminationGracePeriodSeconds {grace} is not above WALLETD_SHUTDOWN_TIMEOUT_SECS")

    # Selectors find what they should.
    for name, svc in by_kind.get("Service", {}).items():
        sel = {"matchLabels": svc["spec"].get("selector", {})}
        if not any(label_match(sel, t["metadata"]["labels"]) for _, t in pods):
            problems.add(f"{scenario} Service/{name}", "its selector matches no pod template")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        n = sum(label_match(pdb["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"]) for d in deployments.values())
        if n != 1:
            problems.add(f"{scenario} PodDisruptionBudget/{name}", f"its selector matches {n} Deployments, not 1")
    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        target = hpa["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            problems.add(f"{scenario} HorizontalPodAutoscaler/{name}", f"targets {target}, which is not rendered")
        elif "replicas" in deployments[target]["spec"]:
            problems.add(f"{scenario} Deployment/{target}", "sets replicas although an HPA owns them")
    for name, np_ in by_kind.get("NetworkPolicy", {}).items():
        if not any(label_match(np_["spec"]["podSelector"], t["metadata"]["labels"]) for _, t in pods):
            problems.add(f"{scenario} NetworkPolicy/{name}", "selects no pod")
    for name, sm in by_kind.get("ServiceMonitor", {}).items():
        targets = [s for s in by_kind.get("Service", {}).values() if label_match(sm["spec"]["selector"], s["metadata"]["labels"])]
        ports = {p["name"] for s in targets for p in s["spec"]["ports"]}
        if not targets or "metrics" not in ports:
            problems.add(f"{scenario} ServiceMonitor/{name}", "selects no Service with a port named metrics")
        scraped = {t["metadata"]["labels"]["app.kubernetes.io/component"] for _, t in pods
                   if any(label_match({"matchLabels": s["spec"]["selector"]}, t["metadata"]["labels"]) for s in targets)}
        missing = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments.values()} - scraped
        if missing:
            problems.add(f"{scenario} ServiceMonitor/{name}", f"does not scrape {sorted(missing)}")

    # The gRPC URLs name rendered Services with a grpc port 50051.
    for cm in by_kind.get("ConfigMap", {}).values():
        for k, v in cm.get("data", {}).items():
            if k.endswith("_GRPC_URL"):
                m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", v)
                svc = by_kind.get("Service", {}).get(m.group(1)) if m else None
                if not svc or not any(p["port"] == int(m.group(2)) and p["name"] == "grpc" for p in svc["spec"]["ports"]):
                    problems.add(f"{scenario} ConfigMap/{cm['metadata']['name']}", f"{k}={v} is no rendered gRPC Service")
            if k == "chains.toml":
                try:
                    tomllib.loads(v)
                except tomllib.TOMLDecodeError as e:
                    problems.add(f"{scenario} ConfigMap/{cm['metadata']['name']}", f"chains.toml is not TOML: {e}")

    # The PrometheusRule is the rules file, unchanged.
    for name, pr in by_kind.get("PrometheusRule", {}).items():
        if pr["spec"]["groups"] != yaml.safe_load(RULES.read_text())["groups"]:
            problems.add(f"{scenario} PrometheusRule/{name}", "differs from deploy/prometheus/walletd-rules.yml")

    # Hooks: the migration Job after what it needs.
    job = by_kind.get("Job", {})
    for name, j in job.items():
        ann = j["metadata"].get("annotations", {})
        if ann.get("helm.sh/hook") != "pre-install,pre-upgrade":
            problems.add(f"{scenario} Job/{name}", "is not a pre-install,pre-upgrade hook")
        weight = int(ann.get("helm.sh/hook-weight", "0"))
        sa = j["spec"]["template"]["spec"]["serviceAccountName"]
        sa_ann = by_kind["ServiceAccount"][sa]["metadata"].get("annotations", {})
        if "helm.sh/hook" not in sa_ann or int(sa_ann.get("helm.sh/hook-weight", "0")) >= weight:
            problems.add(f"{scenario} Job/{name}", f"its ServiceAccount {sa} is not a hook created before it")
        for c in j["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                sec = by_kind.get("Secret", {}).get(ref["name"]) if ref else None
                if sec is not None:
                    s_ann = sec["metadata"].get("annotations", {})
                    if "helm.sh/hook" not in s_ann or int(s_ann.get("helm.sh/hook-weight", "0")) >= weight:
                        problems.add(f"{scenario} Job/{name}", f"reads Secret {ref['name']}, which is not a hook created before it")
                    if ref["key"] not in sec.get("stringData", {}) and ref["key"] not in sec.get("data", {}):
                        problems.add(f"{scenario} Job/{name}", f"Secret {ref['name']} has no key {ref['key']}")

    # Secrets referenced but not rendered: expected to exist (existingSecret and the keys).
    external = set()
    for o, t in pods:
        names = {e["valueFrom"]["secretKeyRef"]["name"] for c in t["spec"]["containers"] for e in c.get("env", [])
                 if (e.get("valueFrom") or {}).get("secretKeyRef")}
        names |= {v["secret"]["secretName"] for v in t["spec"].get("volumes", []) if "secret" in v}
        external |= {n for n in names if n not in by_kind.get("Secret", {})}
    return sorted(external)


def canary(out: Path, problems: Problems) -> None:
    """A copy of the chart with two deliberate mistakes: a misspelt Deployment field (`replica:`) and
    no liveness or readiness probe. The schema validation must refuse every Deployment (checked here);
    checkov must report CKV_K8S_8 and CKV_K8S_9 on canary.yaml (checked by scripts/check-helm.sh).
    Proof, on every run, that the checks check."""
    with tempfile.TemporaryDirectory() as tmp:
        broken_chart = Path(tmp) / "walletd"
        shutil.copytree(CHART, broken_chart, symlinks=False)
        template = broken_chart / "templates/deployments.yaml"
        text = template.read_text()
        broken = text.replace("  revisionHistoryLimit: 5\n", "  replica: 1\n  revisionHistoryLimit: 5\n", 1)
        broken = re.sub(r"\n *(livenessProbe|readinessProbe):\n *httpGet: [^\n]*\n *\{\{- toYaml \$p\.(liveness|readiness) \| nindent 12 \}\}", "", broken)
        if "replica: 1" not in broken or "livenessProbe" in broken or "readinessProbe" in broken:
            problems.add("canary", "could not break deployments.yaml (did its text change?)")
            return
        template.write_text(broken)
        with helm_python.Chart.load(broken_chart) as chart:
            manifests = chart.render(user_values([], {"image": {"digest": PIPELINE_DIGEST}}), name=RELEASE, namespace=NAMESPACE)
    text = manifests[next(k for k in manifests if k.endswith("templates/deployments.yaml"))]
    (out / "canary.yaml").write_text(text)
    deployments = [d for d in yaml.safe_load_all(text) if d and d.get("kind") == "Deployment"]
    refused = 0
    for d in deployments:
        try:
            kubernetes_validate.validate(d, KUBE_VERSIONS[0], strict=True)
        except kubernetes_validate.ValidationError as e:
            refused += "replica" in e.message
    if not deployments or refused != len(deployments):
        problems.add("canary", f"the schema validation refused {refused} of {len(deployments)} Deployments with `replica:`")
    else:
        print(f"render: canary: the schema validation refused all {refused} Deployments with a misspelt `replica:`")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="directory for the rendered YAML (one file per values set)")
    ap.add_argument("--canary", required=True, type=Path, help="directory for the deliberately broken render (canary.yaml)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.canary.mkdir(parents=True, exist_ok=True)
    helm_python.disable_logging()

    problems = Problems()
    settings = declared_settings()
    crds = crd_validators()
    print(f"render: helm SDK {helm_python.helm_sdk_version()} (helm-python-sdk {helm_python.__version__}), "
          f"kubernetes-validate {kubernetes_validate.__version__} (Kubernetes {', '.join(KUBE_VERSIONS)}), "
          f"{len(settings)} walletd settings declared", flush=True)
    validated = 0
    crd_validated = 0
    summary = []
    with helm_python.Chart.load(CHART) as chart:
        for name, files, overrides in SCENARIOS:
            values = user_values(files, overrides)
            # helm lint --strict (warnings fail too), at the oldest Kubernetes the chart claims.
            report = helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSIONS[0]}.0")
            for msg in report.get("messages", []):
                if msg["severity"] >= 2:
                    problems.add(f"{name} lint {msg['path']}", msg["error"])
                else:
                    print(f"  lint info ({name}) {msg['path']}: {msg['error']}")
            for err in report.get("errors", []):
                if not any(err == m["error"] for m in report.get("messages", [])):
                    problems.add(f"{name} lint", err)
            try:
                manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            except helm_python.HelmError as e:
                problems.add(f"{name} render", str(e))
                continue
            objs, docs = [], []
            for template, text in sorted(manifests.items()):
                if template.endswith("NOTES.txt"):
                    continue
                try:
                    loaded = [d for d in yaml.safe_load_all(text) if d]
                except yaml.YAMLError as e:
                    problems.add(f"{name} {template}", f"not YAML: {e}")
                    continue
                for d in loaded:
                    if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                        problems.add(f"{name} {template}", f"a document that is no Kubernetes object: {str(d)[:80]}")
                        continue
                    objs.append(d)
                # Helm's text as `helm template` prints it, for checkov.
                docs.append(f"# Source: {template}\n{text}")
            (args.out / f"{name}.yaml").write_text("\n---\n".join(docs))

            for o in objs:
                where = f"{name} {o['kind']}/{o.get('metadata', {}).get('name')}"
                key = (o["apiVersion"], o["kind"])
                if key in CRD_KINDS:
                    errors = sorted(crds[key].iter_errors(o), key=lambda e: list(e.path))
                    for e in errors:
                        problems.add(where, f"{'.'.join(map(str, e.path))}: {e.message}")
                    crd_validated += 1
                    continue
                for v in KUBE_VERSIONS:
                    try:
                        kubernetes_validate.validate(o, v, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        problems.add(where, f"Kubernetes {v}: {'.'.join(map(str, e.path))}: {e.message}")
                    except kubernetes_validate.SchemaNotFoundError as e:
                        problems.add(where, f"no schema: {e.message}")
                validated += 1
            external = check_release(name, objs, settings, problems)
            kinds = Counter(o["kind"] for o in objs)
            summary.append((name, len(objs), kinds, external))

        # The guards: values that must not render.
        for label, files, overrides, expect in MUST_FAIL:
            try:
                chart.render(user_values(files, overrides), name=RELEASE, namespace=NAMESPACE, is_install=True)
                problems.add(f"guard '{label}'", "rendered, but must fail")
            except helm_python.HelmError as e:
                if expect not in str(e):
                    problems.add(f"guard '{label}'", f"failed for another reason: {e}")

    canary(args.canary, problems)

    print("render: objects per values set")
    for name, n, kinds, external in summary:
        print(f"  {name}: {n} objects ({', '.join(f'{k} {c}' for k, c in sorted(kinds.items()))})")
        print(f"    Secrets it expects to exist: {', '.join(external) or 'none'}")
    total = sum(n for _, n, _, _ in summary)
    print(f"render: {total} objects rendered; {validated} validated against the Kubernetes {' and '.join(KUBE_VERSIONS)} "
          f"schemas (strict), {crd_validated} CRD objects (ServiceMonitor, PrometheusRule) against deploy/helm/crd-schemas; "
          f"{len(MUST_FAIL)} guards refused their bad values")
    if problems.items:
        print(f"render: {len(problems.items)} problem(s)")
        return 1
    print("render: no problem")
    return 0


if __name__ == "__main__":
    sys.exit(main())
