#!/usr/bin/env bash
# Makes promtool available for the Prometheus rule and config checks of make test
# (test/prometheus-rules.test.ts). Idempotent: installs Debian's `prometheus`
# package, which ships promtool, only when promtool is missing. The package's
# server is not started by this script (the tests run promtool alone).
set -euo pipefail

command -v promtool >/dev/null || bash "$(dirname "$0")/ensure-apt-packages.sh" prometheus
command -v promtool >/dev/null || { echo "ensure-promtool: promtool still missing after the install" >&2; exit 1; }
