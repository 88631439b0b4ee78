#!/usr/bin/env bash
# Offline checks of the Helm chart deploy/helm/walletd: no helm binary, no cluster, no network but
# PyPI (only to install the pinned tools the first time).
#
# 1. deploy/helm/render.py (helm-python-sdk, which embeds Helm v4's Go SDK) runs `helm lint --strict`
#    and renders the chart with its defaults, each region's values file and a variant, validates every
#    object against the Kubernetes 1.31 and 1.37 JSON schemas (kubernetes-validate, strict: an unknown
#    field fails) and the ServiceMonitor / PrometheusRule against deploy/helm/crd-schemas, checks what
#    is walletd's own (WALLETD_* names walletd declares, references that resolve, probes, resources,
#    security contexts, hooks in order, the rules file unchanged), that bad values are refused, and
#    that a deliberately broken copy of the chart (the canary) is refused by the schema validation.
# 2. checkov scans the rendered YAML: any failed check fails. Checks that do not apply are skipped
#    where they arise, by a `checkov.io/skipN: ID=reason` annotation in the template; each is listed
#    with its reason in deploy/helm/walletd/CHECKOV.md and printed below. The canary must fail
#    CKV_K8S_8 and CKV_K8S_9 (no liveness / readiness probe), so a checkov that checks nothing fails too.
#
# The tools live in their own virtual environment: checkov pins old versions of common packages
# (botocore, s3transfer, networkx...) and would downgrade those of the system's Python.
# Exits non-zero on a render or lint error, a schema failure, a failed walletd check or a checkov
# failure. Prints the counts and its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

HELM_PYTHON_SDK_VERSION=0.2.2     # Helm v4.2.3's SDK
KUBERNETES_VALIDATE_VERSION=1.37.0 # schemas of Kubernetes 1.25 to 1.37
CHECKOV_VERSION=3.3.30
PINS="helm-python-sdk==$HELM_PYTHON_SDK_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION checkov==$CHECKOV_VERSION"
VENV="${WALLETD_HELM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/walletd-check-helm/venv}"

if [ "$(cat "$VENV/.pins" 2>/dev/null || true)" != "$PINS" ]; then
  echo "check-helm: installing $PINS into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # PINS is a list of requirements
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $PINS
  echo "$PINS" >"$VENV/.pins"
fi
PY="$VENV/bin/python"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# 1. Render, lint, validate. (Helm's loader logs, on stderr, that files/walletd-rules.yml is a link:
# it is, on purpose, to deploy/prometheus/walletd-rules.yml.)
"$PY" deploy/helm/render.py --out "$WORK/rendered" --canary "$WORK/rendered" \
  2> >(grep -v 'found symbolic link in path' >&2)

# 2. checkov, once over the renders and the canary, all in one directory (checkov 3.3.30 given two
# -d scans the first twice and never the second).
echo "check-helm: checkov $CHECKOV_VERSION on $(($(ls "$WORK/rendered" | wc -l) - 1)) rendered values sets and the canary" >&2
set +e
nice "$VENV/bin/checkov" --compact --skip-download --framework kubernetes --output json \
  -d "$WORK/rendered" >"$WORK/checkov.json" 2>"$WORK/checkov.err"
checkov_status=$?
set -e
if [ ! -s "$WORK/checkov.json" ]; then
  cat "$WORK/checkov.err" >&2
  echo "check-helm: checkov produced no report (exit $checkov_status)" >&2
  exit 1
fi

"$PY" - "$WORK/checkov.json" <<'EOF'
import json, sys
from collections import Counter

text, decoder, at, reports = open(sys.argv[1]).read(), json.JSONDecoder(), 0, []
while text[at:].strip():
    at += len(text[at:]) - len(text[at:].lstrip())
    doc, at = decoder.raw_decode(text, at)
    reports += doc if isinstance(doc, list) else [doc]
passed, failed, skipped, canary_failed = [], [], [], Counter()
for report in reports:
    if report.get("check_type") != "kubernetes":
        continue
    if report["summary"].get("parsing_errors"):
        print(f"FAIL checkov could not parse {report['summary']['parsing_errors']} file(s): {report['results'].get('parsing_errors')}")
        sys.exit(1)
    for kind, sink in (("passed_checks", passed), ("failed_checks", failed), ("skipped_checks", skipped)):
        for c in report["results"][kind]:
            if c["file_abs_path"].endswith("/canary.yaml"):
                if kind == "failed_checks":
                    canary_failed[c["check_id"]] += 1
                continue
            sink.append(c)

print(f"check-helm: checkov results: {len(passed)} pass, {len(failed)} fail, {len(skipped)} skipped "
      f"({len({c['check_id'] for c in passed + failed + skipped})} distinct checks; a result is one check on one object)")
for (check, reason), n in sorted(Counter((c["check_id"], c["check_result"].get("suppress_comment", "")) for c in skipped).items()):
    print(f"  skipped {check} ({n}x): {reason}")
for c in failed:
    print(f"FAIL checkov {c['check_id']} {c['check_name']}: {c['resource']} in {c['file_path']}")
ok = not failed
for check in ("CKV_K8S_8", "CKV_K8S_9"):
    if canary_failed[check]:
        print(f"check-helm: canary: checkov failed {check} on {canary_failed[check]} probe-less Deployments, as it must")
    else:
        print(f"FAIL canary: checkov did not report {check} on the probe-less Deployments")
        ok = False
sys.exit(0 if ok else 1)
EOF

echo "check-helm: all passed in $(($(date +%s) - started)) s" >&2
