import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ConfigError, loadConfig } from "../internal/config/config.js";
import { runBinary } from "./helpers/binaries.js";

const tempConfig = (yaml: string) => {
  const dir = mkdtempSync(join(tmpdir(), "lpa-config-"));
  const path = join(dir, "config.yml");
  writeFileSync(path, yaml);
  return path;
};

test("the committed config.yml documents exactly the defaults of the code", () => {
  // If someone changes a default in one place only, operators read a lie.
  const fromFile = loadConfig({ path: "config.yml", env: {} });
  const defaults = loadConfig({ path: tempConfig("{}\n"), env: {} });
  assert.deepEqual(fromFile, defaults);
});

test("a missing default config file means all defaults; an explicit missing file is an error", () => {
  const config = loadConfig({ env: { CONFIG_PATH: undefined }, path: undefined });
  assert.equal(config.grpc.port, 8082);
  assert.throws(() => loadConfig({ path: "/nonexistent/config.yml", env: {} }), ConfigError);
});

test("documented defaults: ports and idempotency retention", () => {
  const config = loadConfig({ path: "config.yml", env: {} });
  assert.equal(config.grpc.port, 8082);
  assert.equal(config.gateway.port, 8080);
  assert.equal(config.status.port, 8000);
  assert.equal(config.metrics.port, 9100);
  assert.equal(config.idempotency.retentionSeconds, 24 * 3600);
  assert.equal(config.api.defaultListLimit, 50);
  assert.equal(config.api.maxListLimit, 500);
  assert.equal(config.api.maxListOffset, 100_000);
});

test("environment variables override their keys", () => {
  const config = loadConfig({
    path: "config.yml",
    env: {
      DATABASE_URL: "postgres://u:p@db.example:6543/x",
      GRPC_PORT: "9000",
      GATEWAY_PORT: "9001",
      STATUS_PORT: "9002",
      METRICS_PORT: "9003",
      LOG_LEVEL: "debug",
    },
  });
  assert.equal(config.database.url, "postgres://u:p@db.example:6543/x");
  assert.deepEqual(
    [config.grpc.port, config.gateway.port, config.status.port, config.metrics.port],
    [9000, 9001, 9002, 9003],
  );
  assert.equal(config.log.level, "debug");
});

test("a bad value stops start-up with a message naming the key and its source", () => {
  assert.throws(
    () => loadConfig({ path: "config.yml", env: { GRPC_PORT: "abc" } }),
    (err: unknown) => err instanceof ConfigError && /grpc\.port/.test(err.message) && /GRPC_PORT/.test(err.message),
  );
  assert.throws(
    () => loadConfig({ path: "config.yml", env: { STATUS_PORT: "70000" } }),
    (err: unknown) => err instanceof ConfigError && /status\.port/.test(err.message),
  );
  assert.throws(
    () => loadConfig({ path: tempConfig("database:\n  maxConnections: 0\n"), env: {} }),
    (err: unknown) => err instanceof ConfigError && /database\.maxConnections/.test(err.message),
  );
  assert.throws(
    () => loadConfig({ path: tempConfig("project:\n  allowRiseToDebug: maybe\n"), env: {} }),
    (err: unknown) => err instanceof ConfigError && /project\.allowRiseToDebug/.test(err.message),
  );
  // Caught here rather than as Node's RangeError when the HTTP/1.1 listener is built.
  assert.throws(
    () => loadConfig({ path: tempConfig("grpc:\n  headersTimeoutMs: 60000\n  requestTimeoutMs: 30000\n"), env: {} }),
    (err: unknown) =>
      err instanceof ConfigError &&
      /grpc\.headersTimeoutMs/.test(err.message) &&
      /must not exceed grpc\.requestTimeoutMs/.test(err.message),
  );
});

test("an unknown key is rejected rather than silently ignored (typos)", () => {
  assert.throws(
    () => loadConfig({ path: tempConfig("grpc:\n  prot: 1\n"), env: {} }),
    (err: unknown) => err instanceof ConfigError && /grpc/.test(err.message) && /prot/.test(err.message),
  );
});

test("booleans accept YAML and environment spellings; 'false' stays false", () => {
  // gateway.enabled defaults to true, so 'false' read as a truthy string would show.
  const config = loadConfig({
    path: tempConfig("gateway:\n  enabled: 'false'\nproject:\n  allowRiseToDebug: 'on'\n"),
    env: {},
  });
  assert.equal(config.gateway.enabled, false);
  assert.equal(config.project.allowRiseToDebug, true);
  assert.equal(loadConfig({ path: tempConfig("{}\n"), env: {} }).project.allowRiseToDebug, false, "off by default");
});

test("the loaded config is frozen", () => {
  const config = loadConfig({ path: "config.yml", env: {} });
  assert.throws(() => {
    (config.grpc as { port: number }).port = 1;
  }, TypeError);
});

test("a bad element of a list key names the list's environment variable", () => {
  assert.throws(
    () => loadConfig({ path: "config.yml", env: { KAFKA_BROKERS: "good:9092,bad" } }),
    (err: unknown) =>
      err instanceof ConfigError && /kafka\.brokers/.test(err.message) && /KAFKA_BROKERS/.test(err.message),
  );
});

test("kafka.producerClient platformatic where @platformatic/kafka is not installed (the image): the retranslator does not start, exit 2 naming the key", async () => {
  const path = tempConfig("kafka:\n  producerClient: platformatic\n");
  const run = await runBinary("retranslator", {
    CONFIG_PATH: path,
    // Nothing listens here: the check comes before any connection.
    DATABASE_URL: "postgres://nobody@127.0.0.1:1/none",
    KAFKA_BROKERS: "127.0.0.1:1",
    NODE_OPTIONS: "--import=./test/helpers/without-platformatic.mjs",
  });
  assert.equal(run.code, 2, `exit code; stderr: ${run.stderr.slice(0, 500)}`);
  assert.match(
    run.stderr,
    /invalid configuration: config key "kafka\.producerClient": platformatic needs @platformatic\/kafka/,
  );
});
