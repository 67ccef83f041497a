import { mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../internal/config/config.js";
import { templateName } from "../test/helpers/database.js";
import { startBenchBase } from "./lib/bench-stack.js";
import { type BenchConfig, type BenchContext, type BenchMode, resultsDir } from "./lib/context.js";
import { type CpuWindow, round } from "./lib/cpu.js";
import { gitInfo, loadAverage, machineInfo } from "./lib/machine.js";
import { binaryForm, childNodeOptions, root } from "./lib/procs.js";
import { guardRun, Resources } from "./lib/resources.js";
import { configFile } from "./lib/stack.js";
import { fmtInt, fmtMs } from "./lib/stats.js";
import { type CreateResult, createRpc } from "./scenarios/create.js";
import {
  type BoundResult,
  claimDeleteBound,
  type DrainResult,
  kafkaBound,
  relayDrain,
  relayRequestShapes,
} from "./scenarios/drain.js";
import { type EndToEndPhase, endToEnd, lingerVariantLabel } from "./scenarios/e2e.js";
import { type FrameworkResult, frameworkCeiling, type PacedFrameworkResult } from "./scenarios/framework.js";
import { type RestResult, restingMemory } from "./scenarios/rest.js";

export const scenarios = ["drain", "create", "framework", "e2e", "memory", "scale"] as const;
export type Scenario = (typeof scenarios)[number];

export interface SuiteOptions {
  mode: BenchMode;
  profile: boolean;
  only: readonly Scenario[];
  /** `--set retranslator.batchSize=2000`: config.yml keys for the children and the bounds. */
  overrides: Record<string, unknown>;
  /** Drain size and spread instead of the mode's defaults (experiments). */
  events?: number;
  packages?: number;
}

// Goals of the benchmark brief, judged in the results.
const goals = {
  drainRatio: 0.8,
  e2eP99Ms: 50,
  scaleFactor: 1.6,
  serverCpuMsPerCreate: 0.35,
  serviceCores: 1.2,
} as const;
// RSS at rest of the compiled binaries (MiB).
const restGoalsMiB = { "grpc-server": 100, retranslator: 80 } as const;
// CreatePackageV1 against the same statement straight on Postgres, by calls in flight.
const createRatioGoal = (concurrency: number) => (concurrency >= 64 ? 0.8 : 0.6);

function benchConfig(options: SuiteOptions): BenchConfig {
  const config = defaults(options);
  if (options.events !== undefined) config.drainEvents = options.events;
  if (options.packages !== undefined) config.packages = options.packages;
  return config;
}

function defaults(options: SuiteOptions): BenchConfig {
  const common = { profile: options.profile, overrides: options.overrides, packages: 1000, partitions: 32 };
  switch (options.mode) {
    case "quick":
      return {
        ...common,
        mode: "quick",
        drainEvents: 20_000,
        warmupEvents: 20_000,
        createConcurrency: [16, 64],
        createWarmupSeconds: 1,
        createSeconds: 4,
        e2eRatePerSecond: 1000,
        e2eSeconds: 10,
        e2eColdSeconds: 3,
        e2eSustainableSeconds: 5,
        memoryEvents: 0,
        restSettleSeconds: 20,
      };
    case "full":
      return {
        ...common,
        mode: "full",
        drainEvents: 100_000,
        warmupEvents: 50_000,
        createConcurrency: [16, 64],
        createWarmupSeconds: 2,
        createSeconds: 10,
        e2eRatePerSecond: 1000,
        e2eSeconds: 30,
        e2eColdSeconds: 5,
        e2eSustainableSeconds: 15,
        memoryEvents: 1_000_000,
        restSettleSeconds: 20,
      };
    case "smoke":
      // Every step once, small: that the bench runs and checks what it delivered, not its figures.
      return {
        ...common,
        mode: "smoke",
        drainEvents: 2000,
        warmupEvents: 500,
        packages: 100,
        partitions: 8,
        createConcurrency: [16],
        createWarmupSeconds: 0.5,
        createSeconds: 1,
        e2eRatePerSecond: 200,
        e2eSeconds: 2,
        e2eColdSeconds: 1,
        e2eSustainableSeconds: 1,
        memoryEvents: 0,
        restSettleSeconds: 6,
      };
  }
}

interface Results {
  relayDrain?: {
    relay: DrainResult;
    boundClaimDelete: BoundResult;
    boundKafka: BoundResult;
    /** kafkajs alone with the request pattern the relay does not use (per-partition or per-batch). */
    diagnosticKafkaOtherShape: BoundResult;
    bound: number;
    ratio: number;
    goal: string;
    met: boolean;
  };
  createRpc?: (CreateResult & { goal: string; met: boolean })[];
  framework?: FrameworkResult[];
  /** The trivial handler at the end-to-end rate: the floor under "server CPU per create". */
  frameworkPaced?: PacedFrameworkResult[];
  /** `met` is null for the cold phase, which the goal does not apply to. */
  endToEnd?: (EndToEndPhase & { goal: string; met: boolean | null })[];
  memory?: (DrainResult & { peakRssMiBMax: number }) | { skipped: string };
  /** RSS of each binary started and idle (both modes: it takes ~1 min). */
  restingMemory?: (RestResult & { goalMiB: number; met: boolean })[];
  scale?: { one: DrainResult; oneFrom: string; two: DrainResult; factor: number; goal: string; met: boolean };
}

export async function runSuite(options: SuiteOptions): Promise<number> {
  const started = performance.now();
  const log = (line: string) => {
    const t = ((performance.now() - started) / 1000).toFixed(1).padStart(6);
    process.stdout.write(`[${t}s] ${line}\n`);
  };
  const config = benchConfig(options);
  const resources = new Resources();
  const logDir = await mkdtemp(join(tmpdir(), "lpa-bench-"));
  const profileDir = join(root, "bench/results/profiles");
  if (config.profile) await mkdir(profileDir, { recursive: true });
  let failed = false;

  // A hang anywhere ends in cleanup, not forever. The smoke run's bound is under the test
  // runner's 300 s per test file, so that it cleans up first.
  const guard = guardRun(resources, log, "bench", { full: 20, quick: 5, smoke: 4 }[config.mode] * 60_000);

  const loadStart = loadAverage();
  log(`logistic-package-api bench, ${config.mode} mode; load average at start ${loadStart.join(" ")}`);
  const results: Results = {};
  try {
    const machine = await machineInfo();
    const git = gitInfo();

    log(`preparing the migrated template database ${templateName}`);
    const { kafka } = await startBenchBase(resources);
    log(`broker: ${machine.broker} at ${kafka.brokers.join(",")}`);
    const ctx: BenchContext = { config, resources, kafka, logDir, profileDir, log };
    // The configuration the children get (config.yml + --set), also used by the bounds.
    const appConfig = loadConfig({ path: await configFile(ctx, {}), env: {} });
    if (Object.keys(config.overrides).length > 0) log(`config overrides: ${JSON.stringify(config.overrides)}`);
    const want = (s: Scenario) => options.only.includes(s);

    if (want("drain")) {
      log(`1. relay drain of ${fmtInt(config.drainEvents)} events`);
      const relay = await relayDrain(ctx, "drain", config.drainEvents, 1);
      log(
        `relay drained ${fmtInt(relay.events)} events in ${relay.seconds} s: ${fmtInt(relay.eventsPerSecond)} events/s`,
      );
      const { bound: a, rows } = await claimDeleteBound(ctx, appConfig, config.drainEvents);
      log(`bound (a) claim+delete SQL alone: ${fmtInt(a.eventsPerSecond)} events/s`);
      // The relay's own request pattern is the bound; the other is a diagnostic.
      const [shape, other] = relayRequestShapes(appConfig);
      const b = await kafkaBound(ctx, appConfig, rows, shape);
      log(
        `bound (b) kafkajs alone, the relay's requests (${shape}): ${fmtInt(b.eventsPerSecond)} events/s (${fmtInt(b.requests ?? 0)} requests)`,
      );
      const b2 = await kafkaBound(ctx, appConfig, rows, other);
      log(
        `diagnostic: kafkajs alone, ${other}: ${fmtInt(b2.eventsPerSecond)} events/s (${fmtInt(b2.requests ?? 0)} requests)`,
      );
      const bound = Math.min(a.eventsPerSecond, b.eventsPerSecond);
      const ratio = round(relay.eventsPerSecond / bound, 2);
      results.relayDrain = {
        relay,
        boundClaimDelete: a,
        boundKafka: b,
        diagnosticKafkaOtherShape: b2,
        bound,
        ratio,
        goal: `ratio >= ${goals.drainRatio}`,
        met: ratio >= goals.drainRatio,
      };
    }

    if (want("create")) {
      log("2. create RPC vs the same statement on Postgres");
      results.createRpc = (await createRpc(ctx)).map((r) => ({
        ...r,
        goal: `ratio >= ${createRatioGoal(r.concurrency)}`,
        met: r.ratio >= createRatioGoal(r.concurrency),
      }));
    }

    if (want("framework")) {
      log("2b. framework ceiling: a trivial handler behind each protocol");
      const framework = await frameworkCeiling(ctx);
      results.framework = framework.ceilings;
      results.frameworkPaced = framework.paced;
    }

    if (want("e2e")) {
      // A quarter of what the API carried at 64 in flight in this run: API,
      // relay and Postgres then use well under the 2 cores (at half, they
      // used ~1.5), so the relay's own latency shows rather than CPU queueing.
      const capacity = results.createRpc?.find((r) => r.concurrency === 64)?.grpc.rps;
      // Without the create scenario in this run (--only=e2e), a rate the machine always carries.
      const sustainable =
        capacity === undefined ? 150 : Math.max(50, Math.min(config.e2eRatePerSecond, Math.round(capacity / 40) * 10));
      log(
        `3. end-to-end latency at ${fmtInt(config.e2eRatePerSecond)} creates/s, then at ${fmtInt(sustainable)}/s; then ${lingerVariantLabel} at ${fmtInt(config.e2eRatePerSecond)}/s`,
      );
      // The goals are the issue's: 1,000 creates/s, steady, in the default configuration
      // (listenNotify on). The other phases are there to compare with, without a goal.
      results.endToEnd = (await endToEnd(ctx, sustainable)).map((r) =>
        r.phase !== "target"
          ? {
              ...r,
              goal: `none: ${r.phase === "cold" ? "the first seconds after start" : "the sustainable rate"}`,
              met: null,
            }
          : !r.listenNotify
            ? { ...r, goal: "none: listenNotify off (not the default)", met: null }
            : r.serverSettings !== undefined
              ? { ...r, goal: `none: ${r.serverSettings} (not the default)`, met: null }
              : { ...r, goal: `p99 < ${goals.e2eP99Ms} ms`, met: r.latency.p99Ms < goals.e2eP99Ms },
      );
    }

    if (want("memory")) {
      log("4a. memory at rest: RSS of each binary started and idle");
      results.restingMemory = (await restingMemory(ctx)).map((r) => {
        const goalMiB = restGoalsMiB[r.binary];
        return { ...r, goalMiB, met: r.rssMiB < goalMiB };
      });
      log(
        `memory at rest: ${results.restingMemory.map((r) => `${r.binary} ${r.rssMiB} MiB`).join(", ")} (${results.restingMemory[0]?.form})`,
      );
      if (config.memoryEvents === 0) {
        results.memory = { skipped: `${config.mode} mode: the 1,000,000-event drain runs in full mode only` };
        log(`4. memory: skipped in ${config.mode} mode`);
      } else {
        log(`4. memory: peak RSS of the retranslator draining ${fmtInt(config.memoryEvents)} events`);
        const m = await relayDrain(ctx, "memory", config.memoryEvents, 1);
        log(`memory: peak RSS ${m.peakRssMiB.join(", ")} MiB; ${fmtInt(m.eventsPerSecond)} events/s`);
        results.memory = { ...m, peakRssMiBMax: Math.max(...m.peakRssMiB) };
      }
    }

    if (want("scale")) {
      log(`5. scale: one vs two retranslators, ${fmtInt(config.drainEvents)} events`);
      // Quick and smoke modes take the one-instance figure from measurement 1 (same N,
      // same settings, same run) to stay within its time; full mode measures
      // both back to back.
      const reused = config.mode !== "full" ? results.relayDrain?.relay : undefined;
      const one = reused ?? (await relayDrain(ctx, "scale-1", config.drainEvents, 1));
      log(`scale: one instance ${fmtInt(one.eventsPerSecond)} events/s${reused ? " (from measurement 1)" : ""}`);
      const two = await relayDrain(ctx, "scale-2", config.drainEvents, 2);
      const factor = round(two.eventsPerSecond / one.eventsPerSecond, 2);
      log(`scale: two instances ${fmtInt(two.eventsPerSecond)} events/s (${factor}x)`);
      results.scale = {
        one,
        oneFrom: reused ? "measurement 1 (relay drain) of this run" : "its own run, just before the two-instance run",
        two,
        factor,
        goal: `two >= ${goals.scaleFactor}x one`,
        met: factor >= goals.scaleFactor,
      };
    }

    const loadEnd = loadAverage();
    const report = {
      timestamp: new Date().toISOString(),
      git,
      mode: config.mode,
      durationSeconds: round((performance.now() - started) / 1000, 1),
      loadAverage: { start: loadStart, end: loadEnd },
      machine,
      config: {
        bench: config,
        processes:
          `grpc-server and retranslator run as child processes (${binaryForm === "compiled" ? "node dist/cmd/<binary>/main.js, the build of npm run build" : "node --import tsx cmd/<binary>/main.ts"}, NODE_OPTIONS grpc-server "${childNodeOptions("grpc-server")}", retranslator "${childNodeOptions("retranslator")}", config.yml defaults, ` +
          "LOG_LEVEL=info to a file, tracing off); load generators and bounds run in the bench process; all on this machine",
        broker: "librdkafka mock cluster 2.0.2 (in memory: no disk, no replication; each partition keeps ~5 MiB)",
        retranslator: appConfig.retranslator,
        kafka: { ...appConfig.kafka, acks: -1, maxInFlightRequests: 1 },
        database: {
          grpcServerPool: appConfig.database.maxConnections,
          retranslatorPool: Math.min(appConfig.database.maxConnections, 4),
        },
      },
      bounds: {
        relayDrain:
          "min of (a) claimEvents + deleteEvents in a loop on one connection, no broker, and (b) kafkajs producing the same " +
          "toEventMessage messages as the relay does (batches of retranslator.batchSize split per partition, one request per " +
          "partition, maxInFlightBatches at once, acks=all), no database",
        createRpc:
          "the statement of PgPackageRepository.create (one CTE: package + event) run by the same number of pg clients",
        endToEnd: "none (goal p99 < 50 ms)",
        scale: "the one-instance drain",
      },
      results,
    };
    const dir = resultsDir(root);
    await mkdir(dir, { recursive: true });
    // latest.json is the last run of quick or full mode; latest-<mode>.json keeps each mode's last run.
    const json = `${JSON.stringify(report, (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v), 2)}\n`;
    const names = config.mode === "smoke" ? ["latest-smoke.json"] : ["latest.json", `latest-${config.mode}.json`];
    for (const name of names) {
      const out = join(dir, name);
      await writeFile(`${out}.tmp`, json);
      await rename(`${out}.tmp`, out);
    }
    process.stdout.write(`\n${table(results)}\n`);
    log(`load average at end ${loadEnd.join(" ")} (start ${loadStart.join(" ")}); ${machine.cores} cores`);
    log(`wrote ${names.map((n) => join(dir, n)).join(" and ")}`);
    return 0;
  } catch (err) {
    failed = true;
    // After SIGINT/SIGTERM the resources are closed under the running measurement: that is its error.
    if (guard.interrupted()) return 130;
    log(`bench failed: ${(err as Error).stack ?? String(err)}`);
    log(`logs of the child processes are kept in ${logDir}`);
    return 1;
  } finally {
    await resources.closeAll(log);
    guard.release();
    if (!failed) await rm(logDir, { recursive: true, force: true });
  }
}

const yesNo = (met: boolean) => (met ? "met" : "MISSED");

function table(results: Results): string {
  const rows: string[][] = [["measurement", "result", "bound (same run)", "ratio", "goal", "", "other load"]];
  // Cores the rest of the machine used meanwhile (result / bound): a figure
  // taken while others kept the 2 cores busy is low for that reason.
  const others = (...w: CpuWindow[]) => w.map((x) => x.othersCores.toFixed(1)).join(" / ");
  const d = results.relayDrain;
  if (d) {
    rows.push([
      `relay drain, ${fmtInt(d.relay.events)} events`,
      `${fmtInt(d.relay.eventsPerSecond)} ev/s, ${fmtInt(d.relay.cpuMicrosPerEvent)} µs CPU/ev`,
      `${fmtInt(d.bound)} ev/s = min(a, b)`,
      d.ratio.toFixed(2),
      "≥ 0.8",
      yesNo(d.met),
      others(d.relay.cpu, d.boundClaimDelete.cpu, d.boundKafka.cpu),
    ]);
    const sub = (name: string, r: BoundResult) =>
      rows.push([
        name,
        `${fmtInt(r.eventsPerSecond)} ev/s, ${fmtInt(r.cpuMicrosPerEvent)} µs CPU/ev`,
        "",
        "",
        "",
        "",
        others(r.cpu),
      ]);
    sub("  (a) claim + delete SQL alone", d.boundClaimDelete);
    sub("  (b) kafkajs alone, relay's requests", d.boundKafka);
    sub("  (diag.) kafkajs, the other request pattern", d.diagnosticKafkaOtherShape);
  }
  const serverCpu = (load: { cpuMicrosPerCall: Record<string, number> }) =>
    `${fmtInt(load.cpuMicrosPerCall["grpc-server"] ?? load.cpuMicrosPerCall.server ?? NaN)} µs server CPU/call`;
  for (const c of results.createRpc ?? []) {
    rows.push([
      `create RPC, ${c.concurrency} in flight`,
      `${fmtInt(c.grpc.rps)} rps, p50 ${fmtMs(c.grpc.p50Ms)} / p99 ${fmtMs(c.grpc.p99Ms)} ms, ${serverCpu(c.grpc)}`,
      `SQL ${fmtInt(c.sql.rps)} rps, p50 ${fmtMs(c.sql.p50Ms)} / p99 ${fmtMs(c.sql.p99Ms)} ms`,
      c.ratio.toFixed(2),
      `≥ ${createRatioGoal(c.concurrency)}`,
      yesNo(c.met),
      others(c.grpc.cpu, c.sql.cpu),
    ]);
    for (const v of c.variants) {
      rows.push([
        `  same, ${v.name}`,
        `${fmtInt(v.grpc.rps)} rps, p99 ${fmtMs(v.grpc.p99Ms)} ms, ${serverCpu(v.grpc)}`,
        "",
        v.ratio.toFixed(2),
        "",
        "",
        others(v.grpc.cpu),
      ]);
    }
  }
  for (const f of results.framework ?? []) {
    rows.push([
      `framework ceiling, ${f.protocol}, ${f.load.concurrency} in flight`,
      `${fmtInt(f.load.rps)} rps (${f.engine}), ${serverCpu(f.load)}`,
      "",
      "",
      "",
      "",
      others(f.load.cpu),
    ]);
  }
  for (const f of results.frameworkPaced ?? []) {
    rows.push([
      `framework floor, ${f.protocol}, ${fmtInt(f.rate)}/s asked`,
      `${(f.serverMicrosPerCall / 1000).toFixed(3)} ms server CPU/call at ${fmtInt(f.achievedRate)}/s (${f.engine}), p99 ${fmtMs(f.p99Ms)} ms; generator ${(f.generatorMicrosPerCall / 1000).toFixed(3)} ms${f.errors > 0 ? `; ${fmtInt(f.errors)} calls FAILED: ${f.firstError}` : ""}`,
      "",
      "",
      "",
      "",
      others(f.cpu),
    ]);
  }
  for (const e of results.endToEnd ?? []) {
    const settings = e.serverSettings === undefined ? "" : `, ${e.serverSettings}`;
    const asked = `${fmtInt(e.targetRate)}/s asked, notify ${e.listenNotify ? "on" : "off"}${settings}${e.phase === "cold" ? `, first ${e.seconds} s after start` : ""}`;
    // Only the steady 1,000/s phase with notify on and the default settings has goals; the others are shown for information.
    const goal = (text: string) => (e.met === null ? "" : text);
    const status = (met: boolean) => (e.met === null ? "" : yesNo(met));
    const perCreateMs = ((e.cpu.cpuSeconds["grpc-server"] ?? NaN) * 1000) / Math.max(1, e.completed);
    rows.push([
      `server CPU per create, ${asked}`,
      `${perCreateMs.toFixed(3)} ms at ${fmtInt(e.achievedRate)}/s; create call p50 ${fmtMs(e.createP50Ms)} / p99 ${fmtMs(e.createP99Ms)} ms`,
      "",
      "",
      goal(`≤ ${goals.serverCpuMsPerCreate} ms`),
      status(perCreateMs <= goals.serverCpuMsPerCreate),
      others(e.cpu),
    ]);
    // The issue's alternative to the p99 goal when the machine is what limits
    // it: the service's share (API, relay, Postgres) below 1.2 of the 2
    // cores, the load generator's and the rest of the machine's shown beside.
    const c = e.cpu.cpuSeconds;
    const serviceCores = ((c["grpc-server"] ?? 0) + (c.retranslator ?? 0) + (c.postgres ?? 0)) / e.cpu.wallSeconds;
    rows.push([
      `server + relay + Postgres cores, ${asked}`,
      `${serviceCores.toFixed(2)} cores; generator ${((c.bench ?? 0) / e.cpu.wallSeconds).toFixed(2)}, machine busy ${e.cpu.machineBusyCores.toFixed(2)} of ${cpus().length}`,
      "",
      "",
      goal(`< ${goals.serviceCores} cores`),
      status(serviceCores < goals.serviceCores),
      others(e.cpu),
    ]);
    rows.push([
      `commit → ack, ${asked}`,
      `p50 ${fmtMs(e.latency.p50Ms)} / p99 ${fmtMs(e.latency.p99Ms)} ms at ${fmtInt(e.achievedRate)}/s`,
      `p99 bucket ${e.latency.p99BucketMs.join("–")} ms`,
      "",
      goal("p99 < 50 ms"),
      status(e.met === true),
      others(e.cpu),
    ]);
  }
  for (const r of results.restingMemory ?? []) {
    rows.push([
      `${r.binary} at rest (${r.form}): RSS, and CPU doing nothing`,
      `${r.rssMiB} MiB (start-up peak ${r.startPeakMiB} MiB); ${r.cpuMsPerSecond} ms CPU per s`,
      "",
      "",
      `< ${r.goalMiB} MiB`,
      yesNo(r.met),
      "",
    ]);
  }
  const m = results.memory;
  if (m && "skipped" in m)
    rows.push(["retranslator peak RSS", `skipped (${m.skipped.split(":")[0]})`, "", "", "", "", ""]);
  else if (m) {
    rows.push([
      `retranslator peak RSS, ${fmtInt(m.events)} events`,
      `${m.peakRssMiBMax} MiB (VmHWM; ${m.readyRssMiB[0]} MiB when ready), ${fmtInt(m.eventsPerSecond)} ev/s`,
      "",
      "",
      "< 150 MiB",
      yesNo(m.peakRssMiBMax < 150),
      others(m.cpu),
    ]);
  }
  const s = results.scale;
  if (s) {
    rows.push([
      `scale, 2 retranslators, ${fmtInt(s.two.events)} events`,
      `${fmtInt(s.two.eventsPerSecond)} ev/s`,
      `1 instance ${fmtInt(s.one.eventsPerSecond)} ev/s`,
      `${s.factor.toFixed(2)}x`,
      "≥ 1.6x",
      yesNo(s.met),
      others(s.two.cpu, s.one.cpu),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => [...r[i]!].length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c + " ".repeat(widths[i]! - [...c].length)).join(" | ")} |`;
  return [line(rows[0]!), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.slice(1).map(line)].join("\n");
}
