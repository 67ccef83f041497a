import type { Config } from "../config/config.js";
import {
  describeKafkaSecurity,
  type KafkaClientSecurity,
  kafkaClientSecurity,
  kafkaSecurityWarning,
} from "../kafka/security.js";
import type { Logger } from "../logger/logger.js";

/**
 * TLS and SASL of a binary's Kafka clients, read once at start (an unreadable CA
 * file stops it there, naming the key) and logged as `kafka connection` (what is
 * used, never the password), with a warning when something travels in clear.
 */
export function kafkaConnection(config: Readonly<Config>, logger: Logger): KafkaClientSecurity {
  const security = kafkaClientSecurity(config.kafka);
  logger.info({ kafka: describeKafkaSecurity(config.kafka), brokers: config.kafka.brokers }, "kafka connection");
  const warning = kafkaSecurityWarning(config.kafka);
  if (warning !== undefined) logger.warn(warning);
  return security;
}
