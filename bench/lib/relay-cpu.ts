import type { Database } from "../../internal/database/database.js";
import { type CpuWindow, cpuWindow, postgresBackends } from "./cpu.js";
import { childPids } from "./procs.js";

/**
 * The CPU a relay drain costs, kept apart from what watches it. The window
 * opens before the burst is committed (the relays may claim the moment it
 * is), so the burst's own INSERT runs inside it; that statement, and the
 * bench's polls of the outbox, run in the bench's Postgres backends, which are
 * the observer's, not the relay's. The relay's backends are told apart by
 * their application_name (`logistic-package-api/retranslator…`: its pools and
 * its LISTEN connection), read again at the end for connections opened
 * meanwhile.
 */
export interface RelayCpu {
  /** The relay processes, their Postgres backends and the broker: what a drain's CPU per event counts. */
  relay: CpuWindow;
  /** The bench process and every other backend of the database (the burst's INSERT, the polls). */
  observer: CpuWindow;
}

const RELAY_APPLICATION = "logistic-package-api/retranslator";

async function relayBackends(db: Database): Promise<number[]> {
  const result = (await db.raw(
    `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE ?`,
    [`${RELAY_APPLICATION}%`],
  )) as { rows: { pid: number }[] };
  return result.rows.map((r) => r.pid);
}

export async function relayCpuWindow(
  db: Database,
  databaseName: string,
  relayPids: () => number[],
): Promise<() => Promise<RelayCpu>> {
  let relayPg = new Set(await relayBackends(db));
  const endRelay = cpuWindow({
    retranslator: relayPids,
    postgres: () => [...relayPg],
    "kafka-mock": () => childPids("kafka-mock"),
  });
  const endObserver = cpuWindow({
    bench: () => [process.pid],
    postgres: () => postgresBackends(databaseName).filter((pid) => !relayPg.has(pid)),
  });
  return async () => {
    const now = await relayBackends(db);
    relayPg = new Set([...relayPg, ...now]);
    return { relay: endRelay(), observer: endObserver() };
  };
}
