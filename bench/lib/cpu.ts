import { readdirSync, readFileSync } from "node:fs";

// Where the CPU goes during a measurement: on 2 cores the load generator, the
// binaries, Postgres and the broker share the machine, so a figure means
// little without knowing who was busy. Read from /proc (USER_HZ = 100 on
// Linux), sampled at the start and the end of a window.

const HZ = 100;

function ticksOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 of stat; here 0-based after the comm.
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined;
  }
}

/** Busy ticks of all cores together (user … steal, without idle and iowait). */
function machineBusyTicks(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return total - (v[3] ?? 0) - (v[4] ?? 0);
}

/** Backends of the Postgres server serving `database`. */
export function postgresBackends(database: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      // "postgres: [cluster: ]user database host(port) state", padded with NULs.
      const m = /^postgres: (?:\S+: )?\S+ (\S+) /.exec(cmd);
      if (m?.[1] === database) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

export interface CpuWindow {
  wallSeconds: number;
  /** Whole machine, every process (other people's test runs included), in cores. */
  machineBusyCores: number;
  /** What the machine spent on processes other than the components below, in cores (Postgres' own background processes included). */
  othersCores: number;
  /** CPU seconds per component during the window. */
  cpuSeconds: Record<string, number>;
}

/**
 * Starts a window; the returned function ends it. `components` name the pids
 * to account (re-read at the end, so a backend opened meanwhile counts from 0).
 */
export function cpuWindow(components: Record<string, () => number[]>): () => CpuWindow {
  const started = performance.now();
  const machine0 = machineBusyTicks();
  const first = new Map<number, number>();
  for (const pids of Object.values(components)) for (const pid of pids()) first.set(pid, ticksOf(pid) ?? 0);
  return () => {
    const wallSeconds = (performance.now() - started) / 1000;
    const machine1 = machineBusyTicks();
    const cpuSeconds: Record<string, number> = {};
    for (const [name, pids] of Object.entries(components)) {
      let ticks = 0;
      for (const pid of pids()) ticks += Math.max(0, (ticksOf(pid) ?? 0) - (first.get(pid) ?? 0));
      cpuSeconds[name] = round(ticks / HZ, 2);
    }
    const busy = (machine1 - machine0) / HZ / wallSeconds;
    const ours = Object.values(cpuSeconds).reduce((a, b) => a + b, 0) / wallSeconds;
    return {
      wallSeconds: round(wallSeconds, 2),
      machineBusyCores: round(busy, 2),
      othersCores: round(Math.max(0, busy - ours), 2),
      cpuSeconds,
    };
  };
}

export const round = (x: number, digits = 0) => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};
