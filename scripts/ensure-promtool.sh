#!/usr/bin/env bash
# Makes promtool available for the Prometheus rule and config checks of make test
# (test/prometheus-rules.test.ts). Idempotent: installs Debian's `prometheus`
# package, which ships promtool, only when promtool is missing. The package's
# server is not started by this script (the tests run promtool alone).
set -euo pipefail

if command -v promtool >/dev/null; then
  exit 0
fi

echo "ensure-promtool: installing Debian's prometheus package (for promtool)" >&2
sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
# Other installs (another make target, a second test run) may hold dpkg's lock: wait for it.
lock=(-o DPkg::Lock::Timeout=600)
"${sudo_cmd[@]}" apt-get "${lock[@]}" update -qq
"${sudo_cmd[@]}" apt-get "${lock[@]}" install -y -qq --no-install-recommends prometheus
command -v promtool >/dev/null || { echo "ensure-promtool: promtool still missing after the install" >&2; exit 1; }
