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
  /** Including the claim that returned this row. */
  attempts: number;
}

export interface EventFailure {
  id: bigint;
  error: string;
  /** A broker outage or timeout (retried without spending the dead-letter budget), not a bad event. */
  retriable: boolean;
}

export interface OutboxRow {
  id: bigint;
  package_id: bigint;
  type: EventType;
  payload: string;
  created: Date;
  traceparent: string | null;
  tracestate: string | null;
  attempts: number;
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
    attempts: row.attempts,
  };
}


// knex expands JS arrays in raw bindings into lists, so sets travel as one
// literal: a Postgres array for ids, JSON for (id, error) pairs.
export const failuresJson = (failures: readonly EventFailure[]) =>
  JSON.stringify(failures.map((f) => ({ id: f.id.toString(), error: f.error, retriable: f.retriable })));
export const idArray = (ids: readonly bigint[]) => `{${ids.join(",")}}`;
