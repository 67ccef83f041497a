import type { BenchContext } from "../lib/context.js";
import { cpuWindow, round } from "../lib/cpu.js";
import { binaryForm, memoryOf, sleep } from "../lib/procs.js";
import {
  benchDatabase,
  benchTopic,
  type RunningBinary,
  startRetranslatorChild,
  startServerChild,
} from "../lib/stack.js";

/** Resident memory of one binary at rest: started, ready, nothing to do. */
export interface RestResult {
  binary: "grpc-server" | "retranslator";
  /** "compiled" (node dist/…/main.js, as the image runs it) or "tsx". */
  form: "compiled" | "tsx";
  /** VmRSS after settling, MiB: what the process holds at rest. */
  rssMiB: number;
  /** VmHWM by then, MiB: start-up's peak (module loading, migrations). */
  startPeakMiB: number;
  /**
   * CPU it spends doing nothing, ms per second, over the second half of the settling time (more
   * of it when that is short):
   * its timers (metrics sampling, log flushes, pool and poll timers) and what they allocate.
   * Counted in ticks of 10 ms, so a figure over 10 s is good to about 1 ms/s.
   */
  cpuMsPerSecond: number;
  settleSeconds: number;
}

// The RSS is the median of the last samples, one a second, of the settling time
// (config.restSettleSeconds: 20 s, long enough for start-up garbage to be collected
// and for the retranslator's idle polls and the servers' timers to have run a few rounds).
const samples = 5;

async function atRest(
  binary: RestResult["binary"],
  running: RunningBinary,
  settleSeconds: number,
): Promise<RestResult> {
  // Half-way, or earlier when the settling time is too short to keep the samples at its end.
  const beforeCpu = Math.min(Math.floor(settleSeconds / 2), Math.max(0, settleSeconds - samples));
  await sleep(beforeCpu * 1000);
  const endCpu = cpuWindow({ binary: () => [running.proc.pid] });
  await sleep(Math.max(0, settleSeconds - beforeCpu - samples) * 1000);
  const rss: number[] = [];
  let hwm = 0;
  for (let i = 0; i < samples; i++) {
    const m = memoryOf(running.proc.pid);
    if (m === undefined) throw new Error(`${binary} exited while at rest; log: ${running.proc.logPath}`);
    rss.push(m.rssKiB);
    hwm = m.hwmKiB;
    await sleep(1000);
  }
  const cpu = endCpu();
  rss.sort((a, b) => a - b);
  return {
    binary,
    form: binaryForm,
    rssMiB: round(rss[Math.floor(samples / 2)]! / 1024, 1),
    startPeakMiB: round(hwm / 1024, 1),
    cpuMsPerSecond: round(((cpu.cpuSeconds.binary ?? Number.NaN) * 1000) / cpu.wallSeconds, 1),
    settleSeconds,
  };
}

/** The grpc-server and the retranslator, one after the other, each on a database and topic of its own. */
export async function restingMemory(ctx: BenchContext): Promise<RestResult[]> {
  const results: RestResult[] = [];
  {
    const db = await benchDatabase(ctx);
    const server = await startServerChild(ctx, "rest-grpc-server", db.url);
    try {
      results.push(await atRest("grpc-server", server, ctx.config.restSettleSeconds));
    } finally {
      await server.stop();
      await db.close();
    }
  }
  {
    const db = await benchDatabase(ctx);
    const topic = await benchTopic(ctx, "rest");
    const relay = await startRetranslatorChild(ctx, "rest-retranslator", { databaseUrl: db.url, topic });
    try {
      results.push(await atRest("retranslator", relay, ctx.config.restSettleSeconds));
    } finally {
      await relay.stop();
      await db.close();
    }
  }
  return results;
}
