import { UnavailableError } from "../domain/errors.js";

/**
 * What a failed statement says about who is at fault, which decides what its
 * caller does with it:
 * - `unavailable`: the database cannot be reached now. The API answers
 *   Unavailable, so clients retry; the relay and the facade retry later.
 * - `row`: one row's values were refused. The create batcher retries a failed
 *   batch call by call, so only the request at fault fails; the facade records
 *   the message as rejected instead of blocking its partition.
 * - `other`: a bug or the database's state (a statement timeout, a deadlock,
 *   a missing table). Retrying each row alone would meet it again N times over;
 *   the API answers Internal and logs the cause.
 */
export type DatabaseErrorKind = "unavailable" | "row" | "other";

/**
 * The one SQLSTATE table (https://www.postgresql.org/docs/current/errcodes-appendix.html),
 * by full code first, then by class (the first two characters).
 */
const sqlStateKinds: ReadonlyMap<string, DatabaseErrorKind> = new Map([
  // Connection exceptions: the connection, not the statement, failed. Not the
  // whole class 08: 08P01 (protocol_violation) is a client bug.
  ["08000", "unavailable"], // connection_exception
  ["08001", "unavailable"], // sqlclient_unable_to_establish_sqlconnection
  ["08003", "unavailable"], // connection_does_not_exist
  ["08004", "unavailable"], // sqlserver_rejected_establishment_of_sqlconnection
  ["08006", "unavailable"], // connection_failure
  // The server is stopping or starting (a restart, a failover): back in a moment.
  ["57P01", "unavailable"], // admin_shutdown
  ["57P02", "unavailable"], // crash_shutdown
  ["57P03", "unavailable"], // cannot_connect_now
  // Freed as other clients disconnect. The rest of class 53 (disk full, out of memory) needs an operator.
  ["53300", "unavailable"], // too_many_connections
  // A value of one row: too long, out of range, not valid in its type or encoding.
  ["22", "row"], // data_exception
  // A constraint on one row (CHECK, NOT NULL, UNIQUE, foreign key).
  ["23", "row"], // integrity_constraint_violation
  // RAISE in a PL/pgSQL trigger or function: the trigger refused the row it was given.
  ["P0", "row"], // plpgsql_error
]);

// Socket errors of the driver: the server is down, unreachable or went away.
const unavailableSocketCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EHOSTUNREACH",
]);

// Failures that carry no code: the pool's acquire timeout (knex) and a
// connection the server closed mid-statement or that never opened in time (pg).
const unavailableMessages = ["Knex: Timeout acquiring a connection", "Connection terminated", "timeout expired"];

/**
 * The SQLSTATE of a Postgres error (`code`, five characters), else undefined.
 * Node's socket errors have five-letter codes too (EPIPE): they carry `syscall`.
 */
export function sqlStateOf(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null || "syscall" in err) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

export function databaseErrorKind(err: unknown): DatabaseErrorKind {
  if (err instanceof UnavailableError) return "unavailable";
  if (typeof err !== "object" || err === null) return "other";
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && unavailableSocketCodes.has(code)) return "unavailable";
  const state = sqlStateOf(err);
  if (state !== undefined) return sqlStateKinds.get(state) ?? sqlStateKinds.get(state.slice(0, 2)) ?? "other";
  const message = (err as { message?: unknown }).message;
  return typeof message === "string" && unavailableMessages.some((m) => message.includes(m)) ? "unavailable" : "other";
}

/**
 * Wraps connectivity failures in the domain's UnavailableError; leaves others
 * as they are. The wrapper's message is what an API client may see, so the
 * driver's code and text (ECONNREFUSED, 57P01, an address) ride along as its
 * own fields instead, where the logs show them.
 */
export function classifyDatabaseError(err: unknown): unknown {
  if (databaseErrorKind(err) !== "unavailable" || err instanceof UnavailableError) return err;
  const { code, message } = describeDatabaseError(err);
  return Object.assign(new UnavailableError("database unavailable", { cause: err }), {
    ...(code === undefined ? {} : { code }),
    detail: message,
  });
}

/**
 * A failed statement's SQLSTATE and Postgres' own message, for logs and
 * facade_rejected. knex prefixes the message with the statement (its
 * placeholders, not its values: database.ts turns compileSqlOnError off), a
 * whole batch's worth of SQL that says nothing about the failure.
 */
export function describeDatabaseError(err: unknown): { code?: string; message: string } {
  if (err instanceof UnavailableError && err.cause !== undefined) return describeDatabaseError(err.cause);
  if (!(err instanceof Error)) return { message: String(err) };
  const code = sqlStateOf(err);
  if (code === undefined) {
    // A socket error keeps its code (ECONNREFUSED); a connect to a name with several
    // addresses fails as an AggregateError with an empty message and one error per address.
    const socketCode = (err as { code?: unknown }).code;
    const inner =
      err instanceof AggregateError ? err.errors.map((e: unknown) => String((e as Error)?.message ?? e)) : [];
    const text = err.message !== "" ? err.message : inner.join("; ");
    return { ...(typeof socketCode === "string" ? { code: socketCode } : {}), message: `${err.name}: ${text}` };
  }
  const at = err.message.lastIndexOf(" - ");
  return { code, message: at >= 0 ? err.message.slice(at + 3) : err.message };
}
