// Kafka TLS and SASL: the config keys, the kafkajs client options built from
// them (one function for every binary), and real handshakes of a kafkajs
// client against a TLS "broker" with certificates made for the test. The
// librdkafka mock cluster used elsewhere speaks neither TLS nor SASL.
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Kafka, logLevel } from "kafkajs";
import { ConfigError, loadConfig } from "../internal/config/config.js";
import { type KafkaSecurityConfig, kafkaClientSecurity, kafkaSecurityWarning } from "../internal/kafka/security.js";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { createTestCa, startTlsKafkaBroker, type TestCa, type TlsKafkaBroker } from "./helpers/kafka-tls-broker.js";
import { startTestRetranslator } from "./helpers/retranslator.js";

const configPath = fileURLToPath(new URL("../config.yml", import.meta.url));
const password = "pw-Zq8!never-logged";
const load = (env: Record<string, string>) => loadConfig({ path: configPath, env });
const none: KafkaSecurityConfig = { ssl: false, sslCaFile: "", saslMechanism: "", saslUsername: "", saslPassword: "" };

function configError(env: Record<string, string>): string {
  try {
    load(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    assert.ok(!err.message.includes(password), `the password leaked into: ${err.message}`);
    return err.message;
  }
  assert.fail("the configuration was accepted");
}

describe("config keys", () => {
  test("defaults: no TLS, no SASL, and the client options say so", () => {
    const k = load({}).kafka;
    assert.deepEqual(
      { ssl: k.ssl, sslCaFile: k.sslCaFile, saslMechanism: k.saslMechanism },
      { ssl: false, sslCaFile: "", saslMechanism: "" },
    );
    assert.deepEqual(kafkaClientSecurity(k), {});
  });

  test("KAFKA_SSL, KAFKA_SASL_MECHANISM (any case), KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD set their keys", () => {
    const k = load({
      KAFKA_SSL: "true",
      KAFKA_SASL_MECHANISM: "SCRAM-SHA-512",
      KAFKA_SASL_USERNAME: "relay",
      KAFKA_SASL_PASSWORD: password,
    }).kafka;
    assert.equal(k.ssl, true);
    assert.equal(k.saslMechanism, "scram-sha-512");
    assert.equal(k.saslUsername, "relay");
    assert.equal(k.saslPassword, password);
  });

  test("a SASL mechanism without a username or password stops start-up naming the missing key", () => {
    assert.match(
      configError({ KAFKA_SASL_MECHANISM: "plain", KAFKA_SASL_PASSWORD: password }),
      /config key "kafka\.saslUsername": is required with kafka\.saslMechanism plain/,
    );
    const noPassword = configError({ KAFKA_SASL_MECHANISM: "scram-sha-256", KAFKA_SASL_USERNAME: "relay" });
    assert.match(noPassword, /config key "kafka\.saslPassword": is required with kafka\.saslMechanism scram-sha-256/);
    assert.doesNotMatch(noPassword, /saslUsername/);
  });

  test("an unknown mechanism names KAFKA_SASL_MECHANISM and the accepted values", () => {
    assert.match(
      configError({ KAFKA_SASL_MECHANISM: "gssapi", KAFKA_SASL_USERNAME: "relay", KAFKA_SASL_PASSWORD: password }),
      /config key "kafka\.saslMechanism" \(from KAFKA_SASL_MECHANISM\): expected plain, scram-sha-256, scram-sha-512 or empty/,
    );
  });

  test("a CA file without KAFKA_SSL is refused rather than silently ignored", () => {
    assert.match(
      configError({ KAFKA_SSL_CA_FILE: "/etc/ssl/kafka-ca.pem" }),
      /config key "kafka\.sslCaFile" \(from KAFKA_SSL_CA_FILE\): is set but kafka\.ssl \(KAFKA_SSL\) is false/,
    );
    assert.match(configError({ KAFKA_SSL: "maybe" }), /config key "kafka\.ssl" \(from KAFKA_SSL\)/);
  });
});

describe("kafkajs client options", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "lpa-kafka-opts-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const mechanism of ["plain", "scram-sha-256", "scram-sha-512"] as const) {
    test(`SASL ${mechanism}: mechanism, username and password as kafkajs expects them`, () => {
      assert.deepEqual(
        kafkaClientSecurity({ ...none, saslMechanism: mechanism, saslUsername: "relay", saslPassword: password }),
        {
          sasl: { mechanism, username: "relay", password },
        },
      );
    });
  }

  test("KAFKA_SSL alone trusts Node's public CAs (ssl: true); with a CA file, exactly that file's certificate", async () => {
    assert.deepEqual(kafkaClientSecurity({ ...none, ssl: true }), { ssl: true });
    const ca = await createTestCa("opts");
    try {
      const { readFile } = await import("node:fs/promises");
      const pem = await readFile(ca.caFile, "utf8");
      assert.deepEqual(kafkaClientSecurity({ ...none, ssl: true, sslCaFile: ca.caFile }), { ssl: { ca: [pem] } });
    } finally {
      await ca.cleanup();
    }
  });

  test("an unreadable CA file, or one without a PEM certificate, stops start-up naming the key and the path", async () => {
    const missing = join(dir, "missing.pem");
    assert.throws(
      () => kafkaClientSecurity({ ...none, ssl: true, sslCaFile: missing }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message === `config key "kafka.sslCaFile" (KAFKA_SSL_CA_FILE): cannot read ${missing}: ENOENT`,
    );
    const garbage = join(dir, "garbage.pem");
    await writeFile(garbage, "not a certificate\n");
    assert.throws(
      () => kafkaClientSecurity({ ...none, ssl: true, sslCaFile: garbage }),
      /KAFKA_SSL_CA_FILE\): .*garbage\.pem holds no PEM certificate/,
    );
  });

  test("SASL without TLS starts, with one warning saying what travels in clear", () => {
    const sasl = { ...none, saslUsername: "relay", saslPassword: password };
    assert.match(
      kafkaSecurityWarning({ ...sasl, saslMechanism: "plain" }) ?? "",
      /plain without kafka\.ssl: the SASL password travels in clear; set KAFKA_SSL=true/,
    );
    assert.match(
      kafkaSecurityWarning({ ...sasl, saslMechanism: "scram-sha-256" }) ?? "",
      /without kafka\.ssl: events travel in clear/,
    );
    assert.equal(kafkaSecurityWarning({ ...sasl, saslMechanism: "plain", ssl: true }), undefined);
    assert.equal(kafkaSecurityWarning(none), undefined);
  });

  test("keys built by hand get the same checks, and the password never appears in the error", () => {
    assert.throws(
      () => kafkaClientSecurity({ ...none, saslMechanism: "plain", saslPassword: password }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /"kafka\.saslUsername" \(KAFKA_SASL_USERNAME\): is required/);
        assert.ok(!err.message.includes(password));
        return true;
      },
    );
    assert.throws(
      () => kafkaClientSecurity({ ...none, sslCaFile: "/x.pem" }),
      /is set but kafka\.ssl \(KAFKA_SSL\) is false/,
    );
  });
});

describe("real TLS and SASL handshakes", () => {
  let trusted: TestCa;
  let other: TestCa;
  let broker: TlsKafkaBroker;
  before(async () => {
    trusted = await createTestCa("trusted");
    other = await createTestCa("other");
    broker = await startTlsKafkaBroker(trusted, "relay", password);
  });
  after(async () => {
    await broker?.stop();
    await trusted?.cleanup();
    await other?.cleanup();
  });

  /** A kafkajs admin client built from config keys the way the binaries build theirs. */
  async function connect(env: Record<string, string>): Promise<void> {
    const config = load({ KAFKA_BROKERS: broker.address, ...env });
    const admin = new Kafka({
      ...kafkaClientSecurity(config.kafka),
      clientId: "kafka-security-test",
      brokers: config.kafka.brokers,
      connectionTimeout: 3000,
      retry: { retries: 0 },
      logLevel: logLevel.NOTHING,
    }).admin();
    try {
      await admin.connect();
    } finally {
      await admin.disconnect();
    }
  }

  for (const mechanism of ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]) {
    test(`KAFKA_SSL with the CA file and SASL ${mechanism}: the client verifies the broker and authenticates`, async () => {
      const before = broker.events.length;
      await connect({
        KAFKA_SSL: "true",
        KAFKA_SSL_CA_FILE: trusted.caFile,
        KAFKA_SASL_MECHANISM: mechanism.toLowerCase(),
        KAFKA_SASL_USERNAME: "relay",
        KAFKA_SASL_PASSWORD: password,
      });
      assert.deepEqual(
        broker.events.slice(before).filter((e) => e.kind !== "request"),
        [{ kind: "authenticated", detail: `${mechanism} relay` }],
      );
    });
  }

  test("a broker certificate from another CA is rejected before a byte of Kafka is sent", async () => {
    const before = broker.events.length;
    await assert.rejects(
      connect({
        KAFKA_SSL: "true",
        KAFKA_SSL_CA_FILE: other.caFile,
        KAFKA_SASL_MECHANISM: "plain",
        KAFKA_SASL_USERNAME: "relay",
        KAFKA_SASL_PASSWORD: password,
      }),
      (err: Error) => {
        assert.match(err.message, /certificate/i);
        assert.ok(!err.message.includes(password));
        return true;
      },
    );
    // (Whether the broker also sees a TLS error depends on TLS 1.3's timing: the client's
    // alert may come after the server considered the handshake done.)
    assert.deepEqual(
      broker.events.slice(before).filter((e) => e.kind === "request"),
      [],
      "no request reached the broker",
    );
  });

  test("without the CA file (public CAs only) the test CA's broker is rejected too: the file is what makes it trusted", async () => {
    await assert.rejects(connect({ KAFKA_SSL: "true" }), /certificate/i);
  });

  test("a wrong password fails authentication, and the error does not contain it", async () => {
    const before = broker.events.length;
    const wrong = "wrong-Pw-4711";
    await assert.rejects(
      connect({
        KAFKA_SSL: "true",
        KAFKA_SSL_CA_FILE: trusted.caFile,
        KAFKA_SASL_MECHANISM: "scram-sha-512",
        KAFKA_SASL_USERNAME: "relay",
        KAFKA_SASL_PASSWORD: wrong,
      }),
      (err: Error) => {
        assert.equal(err.name, "KafkaJSSASLAuthenticationError");
        assert.ok(!err.message.includes(wrong), err.message);
        return true;
      },
    );
    assert.deepEqual(
      broker.events.slice(before).filter((e) => e.kind === "auth-failed"),
      [{ kind: "auth-failed", detail: "SCRAM-SHA-512: wrong proof" }],
    );
  });

  test("the retranslator connects with KAFKA_SSL and SASL, and its logs name the user but never the password", async () => {
    let db: TestDatabase | undefined;
    const wrong = "relay-Secret-0815";
    try {
      db = await createTestDatabase();
      const before = broker.events.length;
      // A wrong password: kafkajs logs the failed authentication, which is where a password could leak.
      const relay = await startTestRetranslator({
        DATABASE_URL: db.url,
        KAFKA_BROKERS: broker.address,
        RETRANSLATOR_METRICS_PORT: "0",
        KAFKA_SSL: "true",
        KAFKA_SSL_CA_FILE: trusted.caFile,
        KAFKA_SASL_MECHANISM: "scram-sha-256",
        KAFKA_SASL_USERNAME: "relay",
        KAFKA_SASL_PASSWORD: wrong,
      });
      await relay.stop();
      assert.ok(
        broker.events.slice(before).some((e) => e.kind === "auth-failed" && e.detail.startsWith("SCRAM-SHA-256")),
        "the relay reached the broker over TLS and tried SCRAM-SHA-256",
      );
      const text = relay.logs.lines.map((l) => JSON.stringify(l)).join("\n");
      assert.ok(!text.includes(wrong), "the password is not in any log line");
      const started = relay.logs.lines.find((l) => l.msg === "kafka connection");
      assert.deepEqual(started?.kafka, {
        ssl: true,
        sslCaFile: trusted.caFile,
        sasl: { mechanism: "scram-sha-256", username: "relay" },
      });
      assert.match(text, /authentication failed/i, "the failure itself is logged");
    } finally {
      await db?.drop();
    }
  });
});
