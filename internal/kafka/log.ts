import { type logCreator, logLevel } from "kafkajs";
import type { Logger } from "../logger/logger.js";

/**
 * kafkajs' own log lines (warnings and errors only: kafkaClient creates clients
 * with logLevel.WARN) as structured lines of our logger, at kafkajs' level, with
 * kafkajs' fields under `kafka`. One adapter for every Kafka client.
 */
export function kafkaLogCreator(logger: Logger): logCreator {
  return () => (entry) => {
    const { message, ...extra } = entry.log;
    const level =
      entry.level === logLevel.ERROR || entry.level === logLevel.NOTHING
        ? "error"
        : entry.level === logLevel.WARN
          ? "warn"
          : "info";
    logger[level]({ kafka: extra, namespace: entry.namespace }, `kafkajs: ${message}`);
  };
}
