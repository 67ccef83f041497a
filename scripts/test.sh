#!/usr/bin/env bash
# The whole test suite (`make test`, `npm test`, CI): installs what is missing, lints, runs the
# unit tier (scripts/test-unit.sh, no services), then prepares a migrated template database and
# runs the integration tier (test/*.test.ts) with node's test runner; CI reads each tier's closing
# summary. With files as arguments it runs only those, with the services ready.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-deps.sh
# Lint first: a formatting or type error fails in seconds, not after the suite.
npm run --silent lint
# The unit tier next: seconds, and no service needed to learn that the logic is broken.
if (($# == 0)); then bash scripts/test-unit.sh; fi
bash scripts/ensure-postgres.sh
bash scripts/ensure-redis.sh
if [[ -f scripts/build-kafka-mock.sh ]]; then bash scripts/build-kafka-mock.sh; fi
# The mock's build for @platformatic/kafka (the relay tests that run with it): built here, once,
# rather than inside a test file's time limit. About a minute; skipped while it is up to date.
bash scripts/build-kafka-mock-next.sh
bash scripts/ensure-python-grpc.sh
bash scripts/ensure-promtool.sh
bash scripts/ensure-chromium.sh

export TEST_DATABASE_ADMIN_URL=${TEST_DATABASE_ADMIN_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
# One template per run (named after this shell's pid), so runs side by side
# cannot drop each other's databases; removed when the run ends.
export TEST_DATABASE_TEMPLATE=lpa_tpl_$$
trap 'psql "$TEST_DATABASE_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $TEST_DATABASE_TEMPLATE WITH (FORCE)" >/dev/null 2>&1 || true' EXIT
# No telemetry exporters in tests: without them the SDK lingers 10+ s per process.
export OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none OTEL_TRACES_EXPORTER=none
export LOG_LEVEL=${LOG_LEVEL:-warn}

node --import tsx test/setup/prepare-template.ts

# Node 20's runner has no globs: pass the files explicitly (or those given as arguments).
if (($# > 0)); then files=("$@"); else mapfile -t files < <(find test -path test/unit -prune -o -name '*.test.ts' -print | sort); fi
((${#files[@]} > 0)) || { echo "no test files found" >&2; exit 1; }
# TEST_NAME_PATTERN runs only the tests whose names match (node's --test-name-pattern).
node --import tsx --test --test-concurrency="${TEST_CONCURRENCY:-2}" --test-timeout=300000 \
  ${TEST_NAME_PATTERN:+"--test-name-pattern=$TEST_NAME_PATTERN"} "${files[@]}"
