import type { Database } from "../database/database.js";
import { type Backlog, readBacklog } from "../outbox/backlog.js";
import { type Claim, type ClaimRequest, claimHeads } from "../outbox/claim-events.js";
import { deadLetterEvents } from "../outbox/dead-letter-events.js";
import { deleteEvents } from "../outbox/delete-events.js";
import { type BackoffPolicy, releaseFailedEvents, releaseUnsentEvents } from "../outbox/release-events.js";
import type { ClaimRef, EventFailure } from "../outbox/types.js";

/**
 * What the relay needs of the outbox table: one method per statement of
 * internal/outbox/ (each documented there), so that the relay can run
 * against an in-memory outbox in the unit tests (test/unit/fakes/). Every
 * outcome but the delete names the claim it answers (owner and lease), so an
 * outcome of an expired claim changes nothing; a published row is deleted
 * whoever holds it now, since the broker already has the event (a newer
 * claim's send of it would only be a duplicate).
 */
export interface Outbox {
  claimHeads(request: ClaimRequest): Promise<Claim>;
  /** Published: the rows leave the outbox. */
  deleteEvents(ids: readonly bigint[]): Promise<number>;
  deadLetterEvents(owner: string, failures: readonly EventFailure[]): Promise<number>;
  /** Failed: given back with backoff (a retriable failure's attempt given back too). */
  releaseFailedEvents(owner: string, failures: readonly EventFailure[], backoff: BackoffPolicy): Promise<number>;
  /** Never sent, or no outcome written by shutdown: given back at once, attempt given back. */
  releaseUnsentEvents(owner: string, claims: readonly ClaimRef[]): Promise<number>;
  readBacklog(): Promise<Backlog>;
}

/** The outbox in Postgres: the statements of internal/outbox/ on `db`. */
export function postgresOutbox(db: Database): Outbox {
  return {
    claimHeads: (request) => claimHeads(db, request),
    deleteEvents: (ids) => deleteEvents(db, ids),
    deadLetterEvents: (owner, failures) => deadLetterEvents(db, owner, failures),
    releaseFailedEvents: (owner, failures, backoff) => releaseFailedEvents(db, owner, failures, backoff),
    releaseUnsentEvents: (owner, claims) => releaseUnsentEvents(db, owner, claims),
    readBacklog: () => readBacklog(db),
  };
}
