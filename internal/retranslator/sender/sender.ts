import type { OutboxEvent } from "../../repo/outbox/types.js";

/** What happened to each event of a batch handed to a sender. */
export interface SendOutcome {
  /** Acknowledged by the broker (acks=all). */
  published: OutboxEvent[];
  /**
   * Sent and failed, with the error; `retriable` failures (outage, timeout)
   * never dead-letter; `deadLetter` ones (an event that can never be sent,
   * e.g. larger than any request may be) dead-letter at once.
   */
  failed: { event: OutboxEvent; error: string; retriable: boolean; deadLetter?: boolean }[];
  /** Not sent because an earlier event of its package failed: no attempt made. */
  unsent: OutboxEvent[];
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
  send(events: readonly OutboxEvent[], partition?: number): Promise<SendOutcome>;
  close(): Promise<void>;
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
