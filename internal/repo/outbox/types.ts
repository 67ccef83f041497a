import type { EventType } from "../../domain/package.js";

/** An outbox row as claimed by a retranslator. */
export interface OutboxEvent {
  id: bigint;
  packageId: bigint;
  type: EventType;
  /** The JSON text of the package after the change (jsonb, rendered by Postgres). */
  payload: string;
  created: Date;
  traceparent: string | null;
  tracestate: string | null;
  /** Why the event was written when it is no change: 'republish' (npm run admin -- republish), else null. */
  reason?: string | null;
  /** Including the claim that returned this row. */
  attempts: number;
  /**
   * The claim's lease expiry as Postgres wrote it (µs): the token of this
   * claim. Outcomes are written only while the row still carries it, so a
   * late outcome cannot touch a newer claim of the same row.
   */
  lease: string;
  /**
   * Local time (epoch ms) after which no send of this claim may start: the
   * lease's end, measured from before the claim, less the longest a send can
   * take. Set by the claim loop; a send started later could still be in
   * flight when the lease runs out and another instance takes the event.
   */
  sendBy?: number;
}

export interface EventFailure {
  id: bigint;
  error: string;
  /** A broker outage or timeout (retried without spending the dead-letter budget), not a bad event. */
  retriable: boolean;
  /** The event can never be sent (too large for any request): dead-letter it now, whatever its attempts. */
  deadLetter?: boolean;
  lease: string;
}

/** A claimed row named by its claim. */
export interface ClaimRef {
  id: bigint;
  lease: string;
}

export interface OutboxRow {
  id: bigint;
  package_id: bigint;
  type: EventType;
  payload: string;
  created: Date;
  traceparent: string | null;
  tracestate: string | null;
  reason?: string | null;
  attempts: number;
  lease: string;
}

export function toOutboxEvent(row: OutboxRow): OutboxEvent {
  return {
    id: row.id,
    packageId: row.package_id,
    type: row.type,
    payload: row.payload,
    created: row.created,
    traceparent: row.traceparent,
    tracestate: row.tracestate,
    reason: row.reason ?? null,
    attempts: row.attempts,
    lease: row.lease,
  };
}

// knex expands JS arrays in raw bindings into lists, so sets travel as one
// literal: a Postgres array for ids, JSON for (id, error) pairs.
export const failuresJson = (failures: readonly EventFailure[]) =>
  JSON.stringify(
    failures.map((f) => ({ id: f.id.toString(), error: f.error, retriable: f.retriable, lease: f.lease })),
  );

export const claimsJson = (claims: readonly ClaimRef[]) =>
  JSON.stringify(claims.map((c) => ({ id: c.id.toString(), lease: c.lease })));
export const idArray = (ids: readonly bigint[]) => `{${ids.join(",")}}`;
