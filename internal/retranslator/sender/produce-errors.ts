// How a failed produce is classified, for both clients (kafkajs and
// @platformatic/kafka): retriable (the connection's or the cluster's state: back
// the partition off, charge no attempt) or the event's fault, and whether the
// broker refused a request for its size.

const tooLarge = new Set(["MESSAGE_TOO_LARGE", "RECORD_LIST_TOO_LARGE"]);

/** The broker refused a request for its size (kafkajs names the error `type`, @platformatic/kafka `apiId`). */
export function isTooLarge(err: unknown): boolean {
  return causes(err).some((e) => tooLarge.has(e.type ?? "") || tooLarge.has(e.apiId ?? ""));
}

type ClientError = Error & {
  /** kafkajs: the protocol error's name; @platformatic/kafka: `apiId`. */
  type?: string;
  apiId?: string;
  retriable?: boolean;
  canRetry?: boolean;
  code?: unknown;
  originalError?: unknown;
  errors?: unknown[];
};

/**
 * An error and the errors inside it, outermost first, down one path: the
 * original error of kafkajs' retries (the last one), a cause, or one of an
 * aggregate's. @platformatic/kafka aggregates its attempts in order
 * ("produce failed 3 times": attempt 1, 2, 3), so its last is the one that
 * counts: an outage on the first try and a refused record on the last is the
 * record's fault. kafkajs' aggregates (one error per broker) keep their first.
 */
function causes(err: unknown): ClientError[] {
  const chain: ClientError[] = [];
  let current: unknown = err;
  for (let depth = 0; depth < 6 && current instanceof Error; depth++) {
    const e = current as ClientError;
    chain.push(e);
    const platformatic = typeof e.code === "string" && e.code.startsWith("PLT_KFK_");
    current =
      e.originalError ??
      e.cause ??
      (Array.isArray(e.errors) ? (platformatic ? e.errors.at(-1) : e.errors[0]) : undefined);
  }
  return chain;
}

// Errors of the connection or the cluster's state, not of the event: kafkajs
// marks protocol errors retriable (NOT_LEADER, UNKNOWN_TOPIC_OR_PARTITION,
// REQUEST_TIMED_OUT, …) and wraps the last one when its own retries run out.
const retriableNames = new Set([
  "KafkaJSConnectionError",
  "KafkaJSConnectionClosedError",
  "KafkaJSRequestTimeoutError",
  "KafkaJSBrokerNotFound",
  "KafkaJSMetadataNotLoaded",
  "KafkaJSTopicMetadataNotLoaded",
  "KafkaJSStaleTopicMetadataAssignment",
  "KafkaJSLockTimeout",
  "KafkaJSTimeout",
]);

// The idempotent producer's own state, not the event's fault: the next send goes through a
// new producer (idempotent-producer.ts), which the broker then accepts.
const producerStateErrors = new Set(["OUT_OF_ORDER_SEQUENCE_NUMBER", "UNKNOWN_PRODUCER_ID", "INVALID_PRODUCER_EPOCH"]);

// @platformatic/kafka says `canRetry` (NOT_LEADER_OR_FOLLOWER, a lost connection, …); its
// timeouts say no, but a request that timed out is an outage here as well (code PLT_KFK_NETWORK);
// and a topic its metadata does not know yet comes back as a UserError without a code of its
// own ("Unknown topic …"), where kafkajs retries UNKNOWN_TOPIC_OR_PARTITION.
export function isRetriable(err: unknown): boolean {
  return causes(err).some(
    (e) =>
      retriableNames.has(e.name) ||
      e.retriable === true ||
      (typeof e.type === "string" && producerStateErrors.has(e.type)) ||
      e.canRetry === true ||
      e.code === "PLT_KFK_NETWORK" ||
      (e.code === "PLT_KFK_USER" && e.message.startsWith("Unknown topic ")),
  );
}
