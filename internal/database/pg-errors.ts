import { UnavailableError } from "../domain/errors.js";

// SQLSTATEs and socket errors that mean "the database is not reachable now",
// as opposed to a bug in a query. They become Unavailable at the edge so that
// clients retry, instead of Internal.
const unavailableSqlStates = new Set([
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
  "08000", // connection_exception
  "08003", // connection_does_not_exist
  "08006", // connection_failure
  "08001", // sqlclient_unable_to_establish_sqlconnection
  "08004", // sqlserver_rejected_establishment_of_sqlconnection
  "53300", // too_many_connections
]);
const unavailableSocketCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EHOSTUNREACH",
]);

export function isUnavailable(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && (unavailableSqlStates.has(code) || unavailableSocketCodes.has(code))) return true;
  const message = (err as { message?: unknown }).message;
  return (
    typeof message === "string" &&
    (message.includes("Knex: Timeout acquiring a connection") ||
      message.includes("Connection terminated") ||
      message.includes("timeout expired"))
  );
}

/** Wraps connectivity failures in the domain's UnavailableError; leaves others as they are. */
export function classifyDatabaseError(err: unknown): unknown {
  return isUnavailable(err) ? new UnavailableError("database unavailable", { cause: err }) : err;
}
