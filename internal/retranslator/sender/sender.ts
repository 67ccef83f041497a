import type { OutboxEvent } from "../../repo/outbox/types.js";

/** What happened to each event of a batch handed to a sender. */
export interface SendOutcome {
  /** Acknowledged by the broker (acks=all). */
  published: OutboxEvent[];
  /** Sent and failed, with the error; `retriable` failures (outage, timeout) never dead-letter. */
  failed: { event: OutboxEvent; error: string; retriable: boolean }[];
  /** Not sent because an earlier event of its package failed: no attempt made. */
  unsent: OutboxEvent[];
}

/** Publishes claimed events. Implementations keep per-package order within the batch. */
export interface Sender {
  send(events: readonly OutboxEvent[]): Promise<SendOutcome>;
  close(): Promise<void>;
}
