import type { OutboxEvent } from "../../outbox/types.js";

/**
 * What happened to each event of a batch handed to a sender: the one outcome
 * type from the send to the outbox (the in-flight pool hands it to the
 * acknowledger as it is, and reports events it gives back without a send in
 * the same shape).
 */
export interface SendOutcome {
  /** Acknowledged by the broker (acks=all). */
  published: OutboxEvent[];
  /** Sent and failed; whether they dead-letter is decided in dead-letter-policy.ts. */
  failed: SendFailure[];
  /** Not sent (an earlier event of its package failed, fencing, shutdown): no attempt made. */
  unsent: OutboxEvent[];
}

/** What a sender's `send` returns: the outcome, and the produce requests that made it. */
export interface SentOutcome extends SendOutcome {
  /**
   * Produce requests the send made, and how many of them failed: a send may
   * take several (a backlog larger than one request, a request split or
   * retried package by package) or none (fenced, no partition metadata).
   * The sender counts them, since only it knows; the metrics read them from here.
   */
  requests: { made: number; failed: number };
}

export interface SendFailure {
  event: OutboxEvent;
  error: string;
  /** An outage or timeout of the partition, not the event's fault: never dead-letters. */
  retriable: boolean;
  /** The event can never be sent (larger than any request may be): dead-letters at once. */
  deadLetter?: boolean;
}

/** Publishes claimed events. Implementations keep per-package order within the batch. */
export interface Sender {
  /**
   * The events grouped by the Kafka partition each will go to, each group in
   * claim order. Throws when the partitions cannot be known (no metadata).
   */
  route(events: readonly OutboxEvent[]): Promise<Map<number, OutboxEvent[]>>;
  /**
   * Sends the events; with `partition`, all of them to that partition as
   * routed before (no metadata request inside the send, whose time the
   * lease check before it could not account for). No request starts for an
   * event past its `sendBy`: such events come back unsent.
   */
  send(events: readonly OutboxEvent[], partition?: number): Promise<SentOutcome>;
  /**
   * Optional: several partitions' events (each partition's in claim order,
   * routed as by `route`) in as few requests as the cluster allows, one per
   * broker, instead of one per partition. Resolves with the partitions the
   * broker acknowledged, each with all its events; a partition left out was
   * not sent (it does not fit one request, its leader is unknown) or its
   * request failed (`failedRequests`), perhaps after the broker appended part of it.
   * The caller sends those again alone with `send`, whose outcome says what
   * failed and whose fault it was: a failure is still known per partition,
   * and no partition is charged for another's. Same fencing as `send`.
   */
  sendTogether?(groups: ReadonlyMap<number, readonly OutboxEvent[]>): Promise<SharedOutcome>;
  close(): Promise<void>;
}

export interface SharedOutcome {
  /** Partitions acknowledged, each with all its events. */
  published: Map<number, OutboxEvent[]>;
  /** Requests made (one per leader broker), and how many of them failed: their partitions' events may or may not have been appended. */
  requests: number;
  failedRequests: number;
}

/**
 * A failed request: the first event of each package counts as attempted; its
 * later events in the request are "unsent" so they do not burn attempts while
 * they wait behind it.
 */
export function failAll(events: readonly OutboxEvent[], error: string, retriable: boolean): SendOutcome {
  const seen = new Set<bigint>();
  const outcome: SendOutcome = { published: [], failed: [], unsent: [] };
  for (const event of events) {
    if (seen.has(event.packageId)) outcome.unsent.push(event);
    else {
      seen.add(event.packageId);
      outcome.failed.push({ event, error, retriable });
    }
  }
  return outcome;
}
