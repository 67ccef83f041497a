import { connectionTimeoutMs } from "../../kafka/client.js";

/**
 * How long one send may take as the relay configures kafkajs, so that leases
 * can be checked against it: the relay starts a send only while the events'
 * lease has at least this long to run, and config validation rejects a lease
 * shorter than it. Each of kafkajs' attempts may have to connect and then
 * waits up to the request timeout; between attempts it backs off up to
 * MAX_RETRY_TIME_MS.
 */
export const MAX_RETRY_TIME_MS = 2000;

export function sendBudgetMs(kafka: { requestTimeoutMs: number; sendRetries: number }): number {
  return (
    (connectionTimeoutMs(kafka.requestTimeoutMs) + kafka.requestTimeoutMs) * (kafka.sendRetries + 1) +
    MAX_RETRY_TIME_MS * kafka.sendRetries
  );
}
