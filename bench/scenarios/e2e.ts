import { type PackageApiClient, packageApiClient } from "../../test/helpers/grpc-client.js";
import type { BenchContext } from "../lib/context.js";
import { type CpuWindow, cpuWindow, postgresBackends, round } from "../lib/cpu.js";
import { openLoop } from "../lib/open-loop.js";
import { waitForEmptyOutbox } from "../lib/outbox.js";
import { childPids } from "../lib/procs.js";
import {
  type BenchDatabase,
  benchDatabase,
  benchTopic,
  type RunningRetranslator,
  startRetranslatorChild,
  startServerChild,
} from "../lib/stack.js";
import { fmtInt, fmtMs, type HistogramBucket, histogramPercentile, parseHistogram, percentile } from "../lib/stats.js";

export interface EndToEndPhase {
  listenNotify: boolean;
  /** The server's settings where they are not the defaults (the linger variant); absent: the defaults. */
  serverSettings?: string;
  /**
   * "cold": the brief's rate on a server and relay just started; "target": the same rate,
   * warm (the steady state the goals are about); "sustainable": a rate this machine can
   * carry (see endToEnd).
   */
  phase: "cold" | "target" | "sustainable";
  targetRate: number;
  seconds: number;
  completed: number;
  errors: number;
  firstError?: string;
  achievedRate: number;
  /** Calls sent 10 ms or more after their time in the schedule (the API could not keep up). */
  lateCalls: number;
  createP50Ms: number;
  createP99Ms: number;
  /** Events in the publish-latency histogram for this phase (should equal `completed`). */
  published: number;
  /** Commit → broker ack, from the retranslator's histogram (interpolated within its bucket). */
  latency: {
    p50Ms: number;
    p50BucketMs: [number, number];
    p99Ms: number;
    p99BucketMs: [number, number];
    meanMs: number;
  };
  cpu: CpuWindow;
}

const histogram = "logistic_package_api_retranslator_publish_latency_seconds";
// Open loop with a cap: past this many calls in flight the schedule slips
// (the late calls are counted) instead of piling up without bound.
const maxInFlight = 256;

/**
 * The server settings measured beside the defaults, notify on, cold and target phases only: a
 * longer create linger shares each statement among more creates, for less CPU per create and a
 * longer wait in each (docs/performance.md, "The create linger trades latency for CPU").
 */
const lingerVariantMs = 20;
const lingerVariant = {
  label: `createLingerMs ${lingerVariantMs}`,
  overrides: { database: { createLingerMs: lingerVariantMs } },
};
/** How the variant's rows are labelled (suite.ts names the pass in its progress line). */
export const lingerVariantLabel = lingerVariant.label;

/**
 * End-to-end latency: steady CreatePackageV1 traffic through the grpc-server
 * binary while a retranslator binary relays (both child processes; one
 * server, one retranslator per listenNotify setting, one after the other;
 * then the linger variant's own server and retranslator). Each phase sends
 * `rate` calls per second for its duration, waits for the outbox to empty,
 * and reads the retranslator's own histogram (event commit → broker ack),
 * taking the difference to the previous phase's reading. Phase "target" runs
 * at the brief's rate; "sustainable" at `sustainableRate`, so that the
 * relay's latency is also seen on a machine that is not saturated by the API
 * load.
 */
export async function endToEnd(ctx: BenchContext, sustainableRate: number): Promise<EndToEndPhase[]> {
  const db = await benchDatabase(ctx);
  const server = await startServerChild(ctx, "e2e-grpc-server", db.url);
  const client = packageApiClient(server.grpcAddress);
  const closeClient = ctx.resources.add("grpc client", async () => client.close());
  try {
    const phases: EndToEndPhase[] = [];
    for (const listenNotify of [true, false]) {
      phases.push(...(await withRelay(ctx, { listenNotify, sustainableRate }, db, client, server.proc.pid)));
    }
    await closeClient();
    await server.stop();
    phases.push(...(await lingerVariantPhases(ctx, db)));
    return phases;
  } finally {
    await closeClient();
    await server.stop();
    await db.close();
  }
}

/** The linger variant: a server of its own (so its JIT warms from the start like the default's), notify on. */
async function lingerVariantPhases(ctx: BenchContext, db: BenchDatabase): Promise<EndToEndPhase[]> {
  const server = await startServerChild(ctx, "e2e-linger-grpc-server", db.url, lingerVariant.overrides);
  const client = packageApiClient(server.grpcAddress);
  const closeClient = ctx.resources.add("grpc client (linger variant)", async () => client.close());
  try {
    return await withRelay(
      ctx,
      { listenNotify: true, serverSettings: lingerVariant.label },
      db,
      client,
      server.proc.pid,
    );
  } finally {
    await closeClient();
    await server.stop();
  }
}

/**
 * One retranslator (with `listenNotify`) beside the running server, through the phases: cold,
 * target, and sustainable when a sustainable rate is given.
 */
async function withRelay(
  ctx: BenchContext,
  run: { listenNotify: boolean; sustainableRate?: number; serverSettings?: string },
  db: BenchDatabase,
  client: PackageApiClient,
  serverPid: number,
): Promise<EndToEndPhase[]> {
  const { listenNotify, sustainableRate } = run;
  const label = `e2e-notify-${listenNotify ? "on" : "off"}${run.serverSettings === undefined ? "" : `-${run.serverSettings.replace(/ /g, "-")}`}`;
  const topic = await benchTopic(ctx, label);
  const relay = await startRetranslatorChild(ctx, `${label}-retranslator`, {
    databaseUrl: db.url,
    topic,
    listenNotify,
  });
  try {
    const phases: EndToEndPhase[] = [];
    let before = parseHistogram("", histogram).buckets;
    let sumBefore = 0;
    const plan = [
      ...(ctx.config.e2eColdSeconds > 0
        ? [{ phase: "cold" as const, rate: ctx.config.e2eRatePerSecond, seconds: ctx.config.e2eColdSeconds }]
        : []),
      { phase: "target" as const, rate: ctx.config.e2eRatePerSecond, seconds: ctx.config.e2eSeconds },
      ...(sustainableRate === undefined
        ? []
        : [{ phase: "sustainable" as const, rate: sustainableRate, seconds: ctx.config.e2eSustainableSeconds }]),
    ];
    for (const { phase, rate, seconds } of plan) {
      const result = await runPhase(ctx, {
        label: `${label} ${phase}`,
        listenNotify,
        phase,
        rate,
        seconds,
        client,
        db,
        relay,
        serverPid,
      });
      const metrics = await (await fetch(`${relay.metricsUrl}/metrics`)).text();
      const h = parseHistogram(metrics, histogram);
      const delta = subtract(h.buckets, before);
      const sum = h.sum - sumBefore;
      before = h.buckets;
      sumBefore = h.sum;
      const count = delta.at(-1)?.count ?? 0;
      const p50 = histogramPercentile(delta, 50);
      const p99 = histogramPercentile(delta, 99);
      const full: EndToEndPhase = {
        ...result,
        ...(run.serverSettings === undefined ? {} : { serverSettings: run.serverSettings }),
        published: count,
        latency: {
          p50Ms: round(p50?.ms ?? NaN, 1),
          p50BucketMs: p50?.bucketMs ?? [NaN, NaN],
          p99Ms: round(p99?.ms ?? NaN, 1),
          p99BucketMs: p99?.bucketMs ?? [NaN, NaN],
          meanMs: round(count > 0 ? (sum / count) * 1000 : NaN, 1),
        },
      };
      ctx.log(
        `${label} ${phase}: ${fmtInt(full.achievedRate)}/s of ${fmtInt(rate)}/s; commit→ack p50 ${fmtMs(full.latency.p50Ms)} ms, p99 ${fmtMs(full.latency.p99Ms)} ms (bucket ${full.latency.p99BucketMs.join("–")} ms)`,
      );
      phases.push(full);
    }
    return phases;
  } finally {
    await relay.stop();
  }
}

function subtract(after: readonly HistogramBucket[], before: readonly HistogramBucket[]): HistogramBucket[] {
  return after.map((b) => ({ le: b.le, count: b.count - (before.find((x) => x.le === b.le)?.count ?? 0) }));
}

async function runPhase(
  ctx: BenchContext,
  p: {
    label: string;
    listenNotify: boolean;
    phase: EndToEndPhase["phase"];
    rate: number;
    seconds: number;
    client: PackageApiClient;
    db: BenchDatabase;
    relay: RunningRetranslator;
    serverPid: number;
  },
): Promise<Omit<EndToEndPhase, "published" | "latency">> {
  ctx.log(`${p.label}: ${fmtInt(p.rate)} creates/s for ${p.seconds} s (listenNotify ${p.listenNotify})`);
  const endCpu = cpuWindow({
    bench: () => [process.pid],
    "grpc-server": () => [p.serverPid],
    retranslator: () => [p.relay.proc.pid],
    postgres: () => postgresBackends(p.db.name),
    "kafka-mock": () => childPids("kafka-mock"),
  });
  const load = await openLoop({
    rate: p.rate,
    seconds: p.seconds,
    maxInFlight,
    call: (n) =>
      p.client.createPackageV1({ Title: `e2e ${n}`, Material: "cardboard", MaximumVolume: 1200, Reusable: false }),
    onProgress: (completed, inFlight) => ctx.log(`${p.label}: ${fmtInt(completed)} created, ${inFlight} in flight`),
  });
  await waitForEmptyOutbox(p.db.db, {
    lastId: 0n,
    timeoutMs: 60_000,
    alive: () => (p.relay.proc.isRunning() ? undefined : `retranslator exited; log: ${p.relay.proc.logPath}`),
  });
  const cpu = endCpu();
  const { latencies } = load;
  const result: Omit<EndToEndPhase, "published" | "latency"> = {
    listenNotify: p.listenNotify,
    phase: p.phase,
    targetRate: p.rate,
    seconds: p.seconds,
    completed: latencies.length,
    errors: load.errors,
    achievedRate: round(latencies.length / load.loadSeconds),
    lateCalls: load.late,
    createP50Ms: round(percentile(latencies, 50), 2),
    createP99Ms: round(percentile(latencies, 99), 2),
    cpu,
  };
  if (load.firstError !== undefined) result.firstError = load.firstError;
  return result;
}
