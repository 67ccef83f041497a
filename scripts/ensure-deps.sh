#!/usr/bin/env bash
# Installs the npm dependencies when node_modules is missing, or older than the lock file or than a
# patch in patches/.
set -euo pipefail
cd "$(dirname "$0")/.."
# A worktree that links another checkout's node_modules must not reinstall: npm ci would empty
# the linked directory under every process of that checkout first.
if [[ -L node_modules ]]; then
  echo "ensure-deps: node_modules is a link to $(readlink node_modules); not installing through it" >&2
  exit 0
fi
stamp=node_modules/.package-lock.json
# A changed patch (patches/, applied by the postinstall) needs a fresh install too. Only asked
# when there is a stamp to compare with (find fails without one, and set -e would end the script).
newer_patch=""
if [[ -f $stamp ]]; then newer_patch=$(find patches -name '*.patch' -newer "$stamp" -print -quit); fi
if [[ ! -f $stamp || package-lock.json -nt $stamp || -n $newer_patch ]]; then
  echo "ensure-deps: npm ci" >&2
  # npm writes the stamp before the postinstall: a patch that failed to apply must not leave a
  # stamp that makes the next run skip the install and go on with an unpatched dependency.
  npm ci --no-audit --no-fund || { rm -f "$stamp"; exit 1; }
fi
