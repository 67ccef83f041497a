import { rowsJson } from "../database/query.js";
import type { EventType } from "../domain/package.js";

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

// A set travels as one JSON parameter beside the id array (see releaseFailedEvents).
export const failuresJson = (failures: readonly EventFailure[]) =>
  rowsJson(failures.map(({ id, error, retriable, lease }) => ({ id, error, retriable, lease })));

export const claimsJson = (claims: readonly ClaimRef[]) => rowsJson(claims.map(({ id, lease }) => ({ id, lease })));
