#!/usr/bin/env bash
# Debian's chromium for the API reference page test (test/api-docs-browser.test.ts):
# playwright-core drives it, so no browser is downloaded by npm. Installs it only
# when missing.
set -euo pipefail

[[ -x /usr/bin/chromium ]] || bash "$(dirname "$0")/ensure-apt-packages.sh" chromium
[[ -x /usr/bin/chromium ]] || { echo "ensure-chromium: /usr/bin/chromium still missing after the install" >&2; exit 1; }
