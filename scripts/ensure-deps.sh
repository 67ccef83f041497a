#!/usr/bin/env bash
# Installs the npm dependencies when node_modules is missing or older than the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."
# A worktree that links another checkout's node_modules must not reinstall: npm ci would empty
# the linked directory under every process of that checkout first.
if [[ -L node_modules ]]; then
  echo "ensure-deps: node_modules is a link to $(readlink node_modules); not installing through it" >&2
  exit 0
fi
stamp=node_modules/.package-lock.json
if [[ ! -f $stamp || package-lock.json -nt $stamp ]]; then
  echo "ensure-deps: npm ci" >&2
  npm ci --no-audit --no-fund
fi
