#!/usr/bin/env bash
# `make run`: everything needed to run the system locally on a fresh machine,
# then the grpc-server and the retranslator in the foreground (Ctrl-C stops
# them gracefully), with a local Kafka-protocol broker unless KAFKA_BROKERS is set.
# The binaries run compiled (npm run build: dist/), as in the image; `npm run
# <binary>` runs one from its TypeScript sources instead, for development.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-deps.sh
bash scripts/ensure-postgres.sh
bash scripts/ensure-redis.sh

export DATABASE_URL=${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/logistic_package_api}
db=$(node -e 'console.log(new URL(process.argv[1]).pathname.slice(1))' "$DATABASE_URL")
admin_url=$(node -e 'const u=new URL(process.argv[1]); u.pathname="/postgres"; console.log(u.toString())' "$DATABASE_URL")
if [[ -z $(psql "$admin_url" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
  echo "run: creating database $db" >&2
  psql "$admin_url" -qc "CREATE DATABASE \"$db\""
fi
echo "run: compiling (npm run build)" >&2
npm run --silent build
node dist/cmd/migrate/main.js

# The local Kafka-protocol broker is needed only when no real cluster is given.
if [[ -z ${KAFKA_BROKERS:-} ]]; then bash scripts/build-kafka-mock.sh; fi
exec node --import tsx scripts/run-local.ts
