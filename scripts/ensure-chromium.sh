#!/usr/bin/env bash
# Debian's chromium for the API reference page test (test/api-docs-browser.test.ts):
# playwright-core drives it, so no browser is downloaded by npm. Installs it only
# when missing.
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi

echo "ensure-chromium: installing Debian's chromium" >&2
sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
# Other installs (another make target, a second test run) may hold dpkg's lock: wait for it.
lock=(-o DPkg::Lock::Timeout=600)
"${sudo_cmd[@]}" apt-get "${lock[@]}" update -qq
"${sudo_cmd[@]}" apt-get "${lock[@]}" install -y -qq --no-install-recommends chromium
[[ -x /usr/bin/chromium ]] || { echo "ensure-chromium: /usr/bin/chromium still missing after the install" >&2; exit 1; }
