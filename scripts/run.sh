#!/usr/bin/env bash
# `make run`: everything needed to run the system locally on a fresh machine,
# then the binaries in the foreground (Ctrl-C stops them gracefully).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-deps.sh
bash scripts/ensure-postgres.sh

export DATABASE_URL=${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/logistic_package_api}
db=$(node -e 'console.log(new URL(process.argv[1]).pathname.slice(1))' "$DATABASE_URL")
admin_url=$(node -e 'const u=new URL(process.argv[1]); u.pathname="/postgres"; console.log(u.toString())' "$DATABASE_URL")
if [[ -z $(psql "$admin_url" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
  echo "run: creating database $db" >&2
  psql "$admin_url" -qc "CREATE DATABASE \"$db\""
fi
npm run --silent migrate

exec npm run --silent grpc-server
