# Routine commands; README.md (and docs/operations.md, docs/performance.md) explain each. Every target installs what it needs.
.PHONY: run test generate lint build migrate check-generated docker-build compose-up bench

# Run the system locally: dependencies, PostgreSQL, migrations, binaries.
run:
	bash scripts/run.sh

# The whole test suite (what CI runs): lint, the unit tier (test/unit/, no services;
# alone: npm run test:unit), then the integration tier (test/*.test.ts).
test:
	bash scripts/test.sh

# Regenerate pkg/ and api/openapi.json from the protos (the results are committed).
# Two templates: buf.gen.yaml cleans pkg/, the OpenAPI one writes into api/ beside the protos.
generate:
	bash scripts/ensure-deps.sh
	npx buf generate
	npx buf generate --template buf.gen.openapi.yaml

# buf lint on the protos, a strict TypeScript type-check, and Biome's formatter and linter
# (biome.jsonc; `npm run format` rewrites the tree in its layout).
lint:
	bash scripts/ensure-deps.sh
	npm run --silent lint

# The production JavaScript: tsc (tsconfig.build.json) compiles the binaries to dist/cmd/<binary>/main.js,
# which the image and `make run` start with plain node. `make lint` type-checks the whole tree.
build:
	bash scripts/ensure-deps.sh
	npm run --silent build

# Apply pending migrations to DATABASE_URL (or database.url in config.yml), connecting as
# DATABASE_MIGRATION_URL (database.migrationUrl) when it is set.
migrate:
	bash scripts/ensure-deps.sh
	npm run --silent migrate

# The image of both binaries (deploy/Dockerfile), tagged with the commit for /version.
docker-build:
	docker build -f deploy/Dockerfile --build-arg COMMIT_HASH=$$(git rev-parse HEAD) -t logistic-package-api:latest .

# The whole stack: PostgreSQL, Kafka (KRaft), Jaeger, Prometheus, Grafana and both binaries.
compose-up:
	docker compose -f deploy/docker-compose.yml up --build

# Benchmarks (docs/performance.md): relay drain, create RPC, end-to-end latency, memory,
# scaling, each beside its raw bound; writes bench/results/latest.json. ARGS=--quick for ~2 min.
bench:
	bash scripts/ensure-deps.sh
	bash scripts/ensure-postgres.sh
	bash scripts/build-kafka-mock.sh
	npm run --silent build
	npm run --silent bench -- $(ARGS)
