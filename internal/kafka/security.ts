import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import type { KafkaConfig, SASLOptions } from "kafkajs";
import { type Config, ConfigError } from "../config/config.js";

export type KafkaSecurityConfig = Pick<
  Config["kafka"],
  "ssl" | "sslCaFile" | "saslMechanism" | "saslUsername" | "saslPassword"
>;

/** The part of a kafkajs client's options that decides how it reaches the brokers. */
export type KafkaClientSecurity = Pick<KafkaConfig, "ssl" | "sasl">;

/**
 * The one place that turns the `kafka.ssl*` and `kafka.sasl*` keys into kafkajs
 * client options; every binary that builds a kafkajs client spreads its result
 * into `new Kafka(...)`. Called at start-up: the CA file is read here, so an
 * unreadable or non-PEM file stops start-up naming the key and the path
 * (kafkajs would otherwise fail on every connection attempt, retried forever).
 * Errors never carry the SASL password.
 */
export function kafkaClientSecurity(kafka: KafkaSecurityConfig): KafkaClientSecurity {
  const options: KafkaClientSecurity = {};
  if (kafka.ssl) {
    // kafkajs passes this to tls.connect with servername = the broker's host,
    // so the broker's name is checked against its certificate.
    options.ssl = kafka.sslCaFile === "" ? true : { ca: [readCa(kafka.sslCaFile)] };
  } else if (kafka.sslCaFile !== "") {
    // The config schema refuses this too; a caller that built the keys by hand
    // must not get a silently plaintext client.
    throw new ConfigError(
      `config key "kafka.sslCaFile" (KAFKA_SSL_CA_FILE): is set but kafka.ssl (KAFKA_SSL) is false`,
    );
  }
  if (kafka.saslMechanism !== "") {
    for (const [key, env] of [
      ["saslUsername", "KAFKA_SASL_USERNAME"],
      ["saslPassword", "KAFKA_SASL_PASSWORD"],
    ] as const) {
      if (kafka[key] === "") {
        throw new ConfigError(
          `config key "kafka.${key}" (${env}): is required with kafka.saslMechanism ${kafka.saslMechanism}`,
        );
      }
    }
    options.sasl = saslOptions(kafka.saslMechanism, kafka.saslUsername, kafka.saslPassword);
  }
  return options;
}

/** What a start-up log line may say about the connection: never the password. */
export function describeKafkaSecurity(kafka: KafkaSecurityConfig): {
  ssl: boolean;
  sslCaFile?: string;
  sasl?: { mechanism: string; username: string };
} {
  return {
    ssl: kafka.ssl,
    ...(kafka.sslCaFile === "" ? {} : { sslCaFile: kafka.sslCaFile }),
    ...(kafka.saslMechanism === "" ? {} : { sasl: { mechanism: kafka.saslMechanism, username: kafka.saslUsername } }),
  };
}

/** SASL credentials over plaintext: PLAIN sends the password as it is. Worth one warning at start. */
export function kafkaSecurityWarning(kafka: KafkaSecurityConfig): string | undefined {
  if (kafka.saslMechanism === "" || kafka.ssl) return undefined;
  return kafka.saslMechanism === "plain"
    ? "kafka.saslMechanism plain without kafka.ssl: the SASL password travels in clear; set KAFKA_SSL=true"
    : `kafka.saslMechanism ${kafka.saslMechanism} without kafka.ssl: events travel in clear; set KAFKA_SSL=true`;
}

function saslOptions(
  mechanism: Exclude<KafkaSecurityConfig["saslMechanism"], "">,
  username: string,
  password: string,
): SASLOptions {
  // One literal per mechanism: kafkajs' SASLOptions is a union keyed by it.
  switch (mechanism) {
    case "plain":
      return { mechanism: "plain", username, password };
    case "scram-sha-256":
      return { mechanism: "scram-sha-256", username, password };
    case "scram-sha-512":
      return { mechanism: "scram-sha-512", username, password };
  }
}

function readCa(path: string): string {
  const where = `config key "kafka.sslCaFile" (KAFKA_SSL_CA_FILE)`;
  let pem: string;
  try {
    pem = readFileSync(path, "utf8");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ConfigError(`${where}: cannot read ${path}: ${e.code ?? e.message}`);
  }
  // Parse it now: a file that is not a PEM certificate would otherwise only show
  // up as a TLS failure on every broker connection.
  try {
    new X509Certificate(pem);
  } catch {
    throw new ConfigError(`${where}: ${path} holds no PEM certificate`);
  }
  return pem;
}
