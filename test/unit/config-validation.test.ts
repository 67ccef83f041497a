// Config validation without a process: each bad value stops loadConfig with a ConfigError naming the
// key (and the environment variable it came from); checks across keys name the key to change.
// test/config.test.ts covers the committed config.yml, defaults and the common cases.

import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { after, describe, test } from "node:test";
import { type Config, ConfigError, envOverrides, loadConfig } from "../../internal/config/config.js";
import { sendBudgetMs } from "../../internal/retranslator/sender/send-budget.js";
import { type ConfigFile, repoConfigPath, writeConfigFile } from "../helpers/config.js";

const files: ConfigFile[] = [];
after(() => Promise.all(files.map((f) => f.cleanup())));

/** loadConfig of config.yml with `overrides` merged in (a temp file) and `env`. */
async function load(overrides: Record<string, unknown>, env: Record<string, string> = {}): Promise<Readonly<Config>> {
  const file = await writeConfigFile(overrides);
  files.push(file);
  return loadConfig({ path: file.path, env });
}

/** Asserts that loading fails with a ConfigError whose message matches every pattern. */
async function refused(load: () => Promise<unknown> | unknown, ...patterns: RegExp[]): Promise<string> {
  let message = "";
  await assert.rejects(
    async () => load(),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `a ConfigError, not ${String(err)}`);
      message = err.message;
      for (const pattern of patterns) assert.match(err.message, pattern);
      return true;
    },
  );
  return message;
}

const fromEnv = (env: Record<string, string>) => loadConfig({ path: repoConfigPath, env });

describe("config validation", () => {
  test("a file written for an earlier release (project.environment) still loads; an unknown key does not", async () => {
    const config = await load({ project: { environment: "production" } });
    assert.equal(config.project.name, "logistic-package-api");
    await refused(() => load({ project: { enviroment: "production" } }), /project/, /enviroment/);
  });

  test("the relay's lease must exceed one send's time by a second (fencing)", async () => {
    const kafka = { requestTimeoutMs: 1000, sendRetries: 0 };
    const budget = sendBudgetMs(kafka);
    assert.equal(budget, 2000, "connect (at most the request timeout) + the request, once");
    await refused(
      () => load({ kafka, retranslator: { leaseSeconds: 2 } }),
      /config key "retranslator\.leaseSeconds"/,
      /a send may take 2000 ms/,
    );
    const config = await load({ kafka, retranslator: { leaseSeconds: 3 } });
    assert.equal(config.retranslator.leaseSeconds, 3);
  });

  test("kafka.idempotent needs kafka.sendRetries of 1 or more (kafkajs refuses an idempotent producer without retries)", async () => {
    await refused(
      () => load({ kafka: { idempotent: true, sendRetries: 0 } }),
      /config key "kafka\.sendRetries"/,
      /at least 1 with kafka\.idempotent/,
    );
    assert.equal((await load({ kafka: { idempotent: true, sendRetries: 1 } })).kafka.idempotent, true);
    assert.equal((await load({ kafka: { idempotent: false, sendRetries: 0 } })).kafka.sendRetries, 0);
  });

  test("kafka.producerClient platformatic is plaintext and not idempotent: TLS, SASL and idempotence are refused with it", async () => {
    assert.equal((await load({})).kafka.producerClient, "kafkajs");
    assert.equal((await load({ kafka: { producerClient: "platformatic" } })).kafka.producerClient, "platformatic");
    await refused(
      () => load({ kafka: { producerClient: "rdkafka" } }),
      /kafka\.producerClient/,
      /kafkajs or platformatic/,
    );
    await refused(
      () =>
        load({
          kafka: {
            producerClient: "platformatic",
            ssl: true,
            idempotent: true,
            saslMechanism: "plain",
            saslUsername: "u",
            saslPassword: "p",
          },
        }),
      /kafka\.ssl.*not supported with kafka\.producerClient platformatic/,
      /kafka\.idempotent.*not supported/,
      /kafka\.saslMechanism.*not supported/,
    );
  });

  test("every problem is reported at once, each with its key", async () => {
    const message = await refused(
      () => fromEnv({ GRPC_PORT: "abc", LOG_LEVEL: "loud" }),
      /grpc\.port" \(from GRPC_PORT\)/,
      /log\.level" \(from LOG_LEVEL\)/,
    );
    assert.equal(message.split("; ").length, 2);
  });

  test("ranges name the key: relay batch size, attempts, ports", async () => {
    await refused(() => load({ retranslator: { batchSize: 0 } }), /retranslator\.batchSize/);
    await refused(() => load({ retranslator: { maxAttempts: 0 } }), /retranslator\.maxAttempts/);
    await refused(
      () => fromEnv({ RETRANSLATOR_METRICS_PORT: "65536" }),
      /retranslator\.metricsPort.*RETRANSLATOR_METRICS_PORT/,
    );
    await refused(() => load({ retranslator: { leaseSeconds: 1.5 } }), /retranslator\.leaseSeconds/);
  });

  test("booleans from the environment: only yes/no spellings", async () => {
    assert.equal(fromEnv({ KAFKA_SSL: "off" }).kafka.ssl, false);
    assert.equal(fromEnv({ BOT_KAFKA_ENABLED: "NO" }).bot.kafka.enabled, false);
    await refused(() => fromEnv({ KAFKA_SSL: "maybe" }), /kafka\.ssl" \(from KAFKA_SSL\)/);
  });

  test("Kafka security keys are checked together", async () => {
    await refused(() => fromEnv({ KAFKA_SSL_CA_FILE: "/etc/ca.pem" }), /kafka\.sslCaFile/, /is set but kafka\.ssl/);
    const message = await refused(
      () => fromEnv({ KAFKA_SASL_MECHANISM: "plain" }),
      /kafka\.saslUsername.*is required with kafka\.saslMechanism plain/,
    );
    assert.match(message, /kafka\.saslPassword/);
    await refused(() => fromEnv({ KAFKA_SASL_MECHANISM: "md5" }), /expected plain, scram-sha-256, scram-sha-512/);
  });

  test("the facade's group timings are checked together", async () => {
    await refused(
      () => load({ facade: { sessionTimeoutMs: 30_000, heartbeatIntervalMs: 11_000 } }),
      /facade\.heartbeatIntervalMs.*at most a third of facade\.sessionTimeoutMs/,
    );
    await refused(
      () => load({ facade: { restartBackoffMinMs: 5000, restartBackoffMaxMs: 1000 } }),
      /facade\.restartBackoffMaxMs/,
    );
  });

  test("a file that is not a mapping, or not YAML, names the file", async () => {
    const list = await writeConfigFile({});
    files.push(list);
    await writeFile(list.path, "- a\n- b\n");
    await refused(() => loadConfig({ path: list.path, env: {} }), /expected a mapping at the top level/);
    await writeFile(list.path, "grpc: [unclosed\n");
    await refused(() => loadConfig({ path: list.path, env: {} }), new RegExp(`config file ${list.path}`));
  });

  test("every environment variable overrides a key that exists", () => {
    const defaults = fromEnv({}) as unknown as Record<string, unknown>;
    for (const [name, key] of Object.entries(envOverrides)) {
      const value = key.split(".").reduce<unknown>((node, part) => (node as Record<string, unknown>)?.[part], defaults);
      assert.notEqual(value, undefined, `${name} → ${key}`);
    }
  });
});
