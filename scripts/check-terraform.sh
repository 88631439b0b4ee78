#!/usr/bin/env bash
# Offline checks of the Terraform in deploy/terraform (no terraform binary runs here, so neither
# `terraform init` nor `terraform validate` does; these checks stand in for them):
#   1. deploy/terraform/check.py, with PyPI python-hcl2: every .tf file (and terraform.tfvars.example)
#      parses; structure (required_providers pinned, typed and described variables, described
#      outputs, module arguments that are the module's variables, every var./local./module./resource
#      reference declared); and the google provider's schema, read from the TypeScript declarations
#      of the npm package @cdktf/provider-google (generated from one hashicorp/google version):
#      every argument and block exists where it is written, required arguments are set, and every
#      attribute read from a resource exists.
#   2. checkov (PyPI) on the directory: no failed check; every skip carries its reason inline and
#      is explained in deploy/terraform/README.md ("checkov").
# Prints counts and exits non-zero on any failure. The tools are pinned and installed when missing,
# each in its own virtualenv under ${WALLETD_TF_TOOLS:-~/.cache/walletd-terraform} (checkov brings
# bc-python-hcl2, which installs a module also named `hcl2`, so the two cannot share one).
# WALLETD_TF_DIR checks another copy of the directory (the script's own tests use that);
# WALLETD_TF_SCHEMA=0 leaves out the provider schema check (it needs npm).
set -euo pipefail
cd "$(dirname "$0")/.."

HCL2_VERSION=8.1.4
CHECKOV_VERSION=3.3.30
# @cdktf/provider-google 16.12.1 carries the schema of hashicorp/google 6.50.0, the lowest version
# deploy/terraform's `~> 6.50` allows. Its npm integrity, so that a changed tarball is refused:
CDKTF_GOOGLE_VERSION=16.12.1
CDKTF_GOOGLE_INTEGRITY="sha512-KqNA/5RiFT07r0PSZ6/07cJ2zESUgbj1JchVj21iBFBZVUbD+578xA/k8eq/r0cbyEgLmg9eYWeVslaYah4DCQ=="
# checkov checks skipped for the whole directory (comma-separated), each explained in the README.
# Empty: every skip is inline (`# checkov:skip=ID:reason`) on the resource it concerns.
SKIP_CHECKS=""

TF_DIR="${WALLETD_TF_DIR:-deploy/terraform}"
TOOLS="${WALLETD_TF_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/walletd-terraform}"
START=$SECONDS
mkdir -p "$TOOLS"

# tool_env NAME PACKAGE VERSION: a virtualenv with PACKAGE==VERSION in it.
tool_env() {
  local dir="$TOOLS/$1" have
  have="$("$dir/bin/python" -c "import importlib.metadata as m; print(m.version('$2'))" 2>/dev/null || true)"
  if [ "$have" != "$3" ]; then
    echo "check-terraform: installing $2==$3 (PyPI) into $dir" >&2
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$2==$3" >&2
  fi
}

tool_env hcl2 python-hcl2 "$HCL2_VERSION"
tool_env checkov checkov "$CHECKOV_VERSION"

SCHEMA_ARGS=()
if [ "${WALLETD_TF_SCHEMA:-1}" != "0" ]; then
  SCHEMA="$TOOLS/cdktf-provider-google-$CDKTF_GOOGLE_VERSION"
  if [ ! -f "$SCHEMA/.complete" ]; then
    command -v npm >/dev/null 2>&1 || {
      echo "check-terraform: npm is needed for the provider schema check (or WALLETD_TF_SCHEMA=0 leaves it out)" >&2
      exit 1
    }
    echo "check-terraform: fetching @cdktf/provider-google@$CDKTF_GOOGLE_VERSION (npm) for the provider schema" >&2
    rm -rf "$SCHEMA" && mkdir -p "$SCHEMA"
    (cd "$SCHEMA" && npm pack --silent "@cdktf/provider-google@$CDKTF_GOOGLE_VERSION" >/dev/null)
    tarball="$SCHEMA/cdktf-provider-google-$CDKTF_GOOGLE_VERSION.tgz"
    got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
    if [ "$got" != "$CDKTF_GOOGLE_INTEGRITY" ]; then
      echo "check-terraform: @cdktf/provider-google@$CDKTF_GOOGLE_VERSION has integrity $got, not $CDKTF_GOOGLE_INTEGRITY" >&2
      exit 1
    fi
    # Only the declarations (about 37 MB of the 260 MB unpacked).
    tar -xzf "$tarball" -C "$SCHEMA" --wildcards 'package/lib/*.d.ts' 'package/package.json'
    rm -f "$tarball"
    touch "$SCHEMA/.complete"
  fi
  SCHEMA_ARGS=(--schema "$SCHEMA/package/lib")
fi

echo "check-terraform: python-hcl2 $HCL2_VERSION, checkov $CHECKOV_VERSION, @cdktf/provider-google $CDKTF_GOOGLE_VERSION" >&2

# 1. Parse, structure, provider schema (and that every checkov skip is explained).
status=0
nice "$TOOLS/hcl2/bin/python" deploy/terraform/check.py "$TF_DIR" "${SCHEMA_ARGS[@]}" --skip-ids "$SKIP_CHECKS" || status=1

# 2. checkov. Its JSON report is summed up here: counts, each failure, each skip with its reason.
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
checkov_args=(--framework terraform -d "$TF_DIR" --download-external-modules false --skip-download -o json)
[ -n "$SKIP_CHECKS" ] && checkov_args+=(--skip-check "$SKIP_CHECKS")
set +e
nice "$TOOLS/checkov/bin/checkov" "${checkov_args[@]}" >"$report" 2>"$report.err"
checkov_rc=$?
set -e
if ! python3 - "$report" <<'EOF'
import json, sys
try:
    data = json.load(open(sys.argv[1]))
except ValueError:
    print("checkov: no JSON report", file=sys.stderr)
    sys.exit(1)
reports = data if isinstance(data, list) else [data]
passed = failed = skipped = parse_errors = 0
for r in reports:
    s = r.get("summary", {})
    passed += s.get("passed", 0); failed += s.get("failed", 0)
    skipped += s.get("skipped", 0); parse_errors += s.get("parsing_errors", 0)
    results = r.get("results", {})
    for c in results.get("failed_checks", []):
        print(f"checkov FAILED {c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): {c['check_name']}", file=sys.stderr)
    for c in results.get("skipped_checks", []):
        reason = (c.get("check_result") or {}).get("suppress_comment", "")
        print(f"checkov skipped {c['check_id']} {c['resource']}: {reason}")
    for f in results.get("parsing_errors", []) if isinstance(results.get("parsing_errors"), list) else []:
        print(f"checkov parse error: {f}", file=sys.stderr)
if passed == 0:
    print("checkov: no check ran", file=sys.stderr)
    sys.exit(1)
if parse_errors:
    print(f"checkov: {parse_errors} files did not parse", file=sys.stderr)
print(f"check-terraform: checkov results: {passed} pass, {failed} fail, {skipped} skipped")
sys.exit(1 if failed or parse_errors else 0)
EOF
then
  status=1
fi
if [ "$checkov_rc" -ne 0 ] && [ "$status" -eq 0 ]; then
  # checkov failed without a failed check in its report (a crash, say): show what it said.
  cat "$report.err" >&2
  echo "check-terraform: checkov exited $checkov_rc" >&2
  status=1
fi
rm -f "$report.err"

echo "check-terraform: $([ "$status" -eq 0 ] && echo ok || echo FAILED) in $((SECONDS - START)) s" >&2
exit "$status"
