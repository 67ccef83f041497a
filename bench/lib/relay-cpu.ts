import { applicationName } from "../../internal/app/scaffold.js";
import { loadConfig } from "../../internal/config/config.js";
import type { Database } from "../../internal/database/database.js";
import type { BenchContext } from "./context.js";
import { type CpuWindow, cpuWindow, postgresBackends, round } from "./cpu.js";
import { childPids } from "./procs.js";
import { configFile } from "./stack.js";

/**
 * The CPU a relay drain costs, kept apart from what watches it. The window
 * opens before the burst is committed (the relays may claim the moment it
 * is), so the burst's own INSERT runs inside it; that statement, and the
 * bench's polls of the outbox, run in the bench's Postgres backends, which are
 * the observer's, not the relay's. The relay's backends are told apart by
 * their application_name (`<project.name>/retranslator…`: its pools and its
 * LISTEN connection), read again at the end for connections opened meanwhile.
 * A backend that closes inside the window (a pool connection reaped, a LISTEN
 * reconnect) is counted in neither: /proc no longer has it.
 */
export interface RelayCpu {
  /** The relay processes, their Postgres backends and the broker: what a drain's CPU per event counts. */
  relay: CpuWindow;
  /** The bench process and every other backend of the database (the burst's INSERT, the polls). */
  observer: CpuWindow;
}

async function backendsNamed(db: Database, prefix: string): Promise<number[]> {
  const result = (await db.raw(
    `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE ?`,
    [`${prefix}%`],
  )) as { rows: { pid: number }[] };
  return result.rows.map((r) => r.pid);
}

export async function relayCpuWindow(
  ctx: BenchContext,
  db: Database,
  databaseName: string,
  relayPids: () => number[],
): Promise<() => Promise<RelayCpu>> {
  // The children's own config names their connections.
  const prefix = applicationName(loadConfig({ path: await configFile(ctx, {}), env: {} }), "retranslator");
  let relayPg = new Set(await backendsNamed(db, prefix));
  if (relayPg.size === 0)
    throw new Error(`no Postgres backend named ${prefix}…: the relay's CPU could not be told apart`);
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
    relayPg = new Set([...relayPg, ...(await backendsNamed(db, prefix))]);
    const relay = endRelay();
    const observer = endObserver();
    // Each window's "others" would count the other window's components: the rest of the machine is what neither holds.
    const cores = (w: CpuWindow) => Object.values(w.cpuSeconds).reduce((a, b) => a + b, 0) / w.wallSeconds;
    const others = round(Math.max(0, relay.machineBusyCores - cores(relay) - cores(observer)), 2);
    return { relay: { ...relay, othersCores: others }, observer: { ...observer, othersCores: others } };
  };
}
