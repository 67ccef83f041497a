import { Kafka, logLevel, type RetryOptions } from "kafkajs";
import type { Logger } from "../logger/logger.js";
import { kafkaLogCreator } from "./log.js";
import type { KafkaClientSecurity } from "./security.js";

export interface KafkaClientOptions {
  brokers: readonly string[];
  clientId: string;
  /** Every broker request but JoinGroup (which kafkajs gives the rebalance timeout + 5 s). */
  requestTimeoutMs: number;
  /** TLS and SASL, from kafkaClientSecurity(config.kafka). */
  security: KafkaClientSecurity;
  /** kafkajs' retries of one request; its default (5 retries over about 30 s) when absent. */
  retry?: RetryOptions;
}

/**
 * kafkajs' connection timeout: at most 3 s, and never above the request
 * timeout. The relay's send budget (retranslator/sender/send-budget.ts)
 * counts one per attempt of a send.
 */
export const connectionTimeoutMs = (requestTimeoutMs: number): number => Math.min(requestTimeoutMs, 3000);

/**
 * The one way to build a kafkajs client, for every Kafka client of every binary.
 * kafkajs' warnings and errors go to `logger`; with null kafkajs logs nothing,
 * for a client whose caller logs each failure itself (once per outage).
 */
export function kafkaClient(options: KafkaClientOptions, logger: Logger | null): Kafka {
  return new Kafka({
    ...options.security,
    clientId: options.clientId,
    brokers: [...options.brokers],
    requestTimeout: options.requestTimeoutMs,
    connectionTimeout: connectionTimeoutMs(options.requestTimeoutMs),
    ...(options.retry !== undefined && { retry: options.retry }),
    ...(logger === null
      ? { logLevel: logLevel.NOTHING }
      : { logLevel: logLevel.WARN, logCreator: kafkaLogCreator(logger) }),
  });
}
