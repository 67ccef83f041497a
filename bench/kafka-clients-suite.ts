import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Kafka, logLevel } from "kafkajs";
import { startKafkaMock } from "../tools/kafka-mock/kafka-mock.js";
import { withParentDeathSignal } from "../tools/parent-death.js";
import { startBenchBase } from "./lib/bench-stack.js";
import { type BenchContext, drainOnlyConfig, resultsDir } from "./lib/context.js";
import { BATCH, PARTITIONS } from "./lib/kafka-client-producer.js";
import { gitInfo, loadAverage, machineInfo } from "./lib/machine.js";
import { root } from "./lib/procs.js";
import { guardRun, Resources } from "./lib/resources.js";
import { fmtInt, median } from "./lib/stats.js";
import { relayDrain } from "./scenarios/drain.js";

// `npm run bench -- --only=kafka-clients [--quick]`: kafkajs (the relay's client,
// patched as installed) against @platformatic/kafka, each producing the relay's
// messages (toEventMessage: a PackageEvent value and five headers) in requests of
// 500 to 32 partitions, acks=all, one request at a time, alone in a process of its
// own, runs alternated. The broker is the same mock program built against
// librdkafka 2.12.0 with a fix to its ApiVersions v3 (scripts/build-kafka-mock-next.sh):
// the stock mock (Debian's librdkafka) refuses @platformatic/kafka at its first request.
// Then the relay itself with each client behind the same Sender (kafka.producerClient):
// a drain of 20,000 events over 1,000 packages by one retranslator process, as the
// drain row of the main bench, runs alternated, each on a fresh broker.
// (docs/relay.md, "Another Kafka client"). Results: bench/results/kafka-clients-<mode>.json.

const clients = ["kafkajs", "platformatic"] as const;

interface Run {
  client: (typeof clients)[number];
  records: number;
  recordsPerSecond: number;
  cpuMicrosPerRecord: number;
}

export async function runKafkaClients(options: { quick: boolean }): Promise<number> {
  const log = (line: string) => process.stdout.write(`${line}\n`);
  const resources = new Resources();
  // A hang ends in cleanup; Ctrl-C or a runner's SIGTERM stops the brokers and processes it started.
  const guard = guardRun(resources, log, "kafka-clients bench", (options.quick ? 20 : 60) * 60_000);
  try {
    return await measureClients(options, resources, log);
  } catch (err) {
    // After a signal the resources were closed under the running measurement: that is its error.
    if (guard.interrupted()) return 130;
    log(`kafka-clients bench failed: ${(err as Error).stack ?? String(err)}`);
    return 1;
  } finally {
    await resources.closeAll(log);
    guard.release();
  }
}

async function measureClients(
  options: { quick: boolean },
  resources: Resources,
  log: (line: string) => void,
): Promise<number> {
  const startedAt = new Date().toISOString();
  const rounds = options.quick ? 3 : 5;
  const warmup = 5000;
  const measured = options.quick ? 20_000 : 100_000;
  log(`kafka clients bench: ${rounds} rounds, ${fmtInt(measured)} records each after ${fmtInt(warmup)}`);
  // The first start builds the mock against librdkafka 2.12.0 when it is missing or out of
  // date (scripts/build-kafka-mock-next.sh): a minute or more.
  const runs: Run[] = [];
  for (let round = 0; round < rounds; round++) {
    // Alternated, each on a fresh broker and topic, the first client of a round alternating too.
    const order = round % 2 === 0 ? clients : ([...clients].reverse() as unknown as typeof clients);
    for (const client of order) {
      const kafka = await startKafkaMock({ build: "next" });
      const stopKafka = resources.add("kafka mock (next)", () => kafka.stop());
      const producer = new AbortController();
      const stopProducer = resources.add(`${client} producer`, async () => producer.abort());
      try {
        const topic = `clients-${round}-${client}`;
        await kafka.createTopic(topic, PARTITIONS);
        const [file, args] = withParentDeathSignal(
          [
            process.execPath,
            "--import",
            "tsx",
            "bench/lib/kafka-client-producer.ts",
            client,
            kafka.brokers[0]!,
            topic,
            String(warmup),
            String(measured),
          ],
          "TERM",
        );
        const { stdout } = await promisify(execFile)(file, args, {
          cwd: root,
          maxBuffer: 1024 * 1024,
          signal: producer.signal,
        });
        const run = JSON.parse(stdout.trim().split("\n").at(-1)!) as Run;
        // As many records on the topic as were sent (its offsets): a client that dropped some must not look fast.
        const admin = new Kafka({ brokers: kafka.brokers, logLevel: logLevel.NOTHING }).admin();
        await admin.connect();
        const offsets = await admin.fetchTopicOffsets(topic);
        await admin.disconnect();
        const stored = offsets.reduce((sum, p) => sum + Number(p.high), 0);
        if (stored !== warmup + measured)
          throw new Error(`${client}: ${stored} of ${warmup + measured} records on the topic`);
        runs.push(run);
        log(
          `round ${round + 1} ${client}: ${fmtInt(run.recordsPerSecond)} records/s, ${run.cpuMicrosPerRecord} µs CPU per record`,
        );
      } finally {
        await stopProducer();
        await stopKafka();
      }
    }
  }
  const relayRuns = await relayRounds(rounds, resources, log);
  const summary = Object.fromEntries(
    clients.map((c) => {
      const mine = runs.filter((r) => r.client === c);
      return [
        c,
        {
          recordsPerSecond: mine.map((r) => r.recordsPerSecond),
          cpuMicrosPerRecord: mine.map((r) => r.cpuMicrosPerRecord),
          medianRecordsPerSecond: median(mine.map((r) => r.recordsPerSecond)),
          medianCpuMicrosPerRecord: median(mine.map((r) => r.cpuMicrosPerRecord)),
        },
      ];
    }),
  );
  log("\n| client | records/s (runs) | median | CPU µs/record (runs) | median |\n|---|---|---|---|---|");
  for (const c of clients) {
    const s = summary[c]!;
    log(
      `| ${c} | ${s.recordsPerSecond.map(fmtInt).join(", ")} | ${fmtInt(s.medianRecordsPerSecond)} | ${s.cpuMicrosPerRecord.join(", ")} | ${s.medianCpuMicrosPerRecord} |`,
    );
  }
  const relay = Object.fromEntries(
    clients.map((c) => {
      const mine = relayRuns.filter((r) => r.client === c);
      return [
        c,
        {
          eventsPerSecond: mine.map((r) => r.eventsPerSecond),
          cpuMicrosPerEvent: mine.map((r) => r.cpuMicrosPerEvent),
          relayCpuMicrosPerEvent: mine.map((r) => r.relayCpuMicrosPerEvent),
          medianEventsPerSecond: median(mine.map((r) => r.eventsPerSecond)),
          medianCpuMicrosPerEvent: median(mine.map((r) => r.cpuMicrosPerEvent)),
          medianRelayCpuMicrosPerEvent: median(mine.map((r) => r.relayCpuMicrosPerEvent)),
        },
      ];
    }),
  );
  log(
    "\n| relay drain, client behind the Sender | events/s (runs) | median | CPU µs/event: relay process (runs) | with its Postgres and the broker (runs) |\n|---|---|---|---|---|",
  );
  for (const c of clients) {
    const r = relay[c]!;
    log(
      `| ${c} | ${r.eventsPerSecond.map(fmtInt).join(", ")} | ${fmtInt(r.medianEventsPerSecond)} | ${r.relayCpuMicrosPerEvent.join(", ")} | ${r.cpuMicrosPerEvent.join(", ")} |`,
    );
  }
  const mode = options.quick ? "quick" : "full";
  await mkdir(resultsDir(root), { recursive: true });
  const out = join(resultsDir(root), `kafka-clients-${mode}.json`);
  await writeFile(
    out,
    `${JSON.stringify(
      {
        startedAt,
        // The broker of this run is not the tests' mock (machineInfo names that one).
        machine: {
          ...(await machineInfo()),
          broker:
            "tools/kafka-mock built against librdkafka 2.12.0 + tools/kafka-mock/librdkafka-2.12.0-mock-fixes.patch",
        },
        git: gitInfo(),
        loadAverage: loadAverage(),
        shape: { warmup, measured, batch: BATCH, partitions: PARTITIONS, acks: "all", inFlight: 1 },
        broker:
          "tools/kafka-mock built against librdkafka 2.12.0 + tools/kafka-mock/librdkafka-2.12.0-mock-fixes.patch",
        summary,
        relayDrain: {
          shape: { events: RELAY_EVENTS, packages: RELAY_PACKAGES, partitions: PARTITIONS, instances: 1 },
          runs: relayRuns,
          summary: relay,
        },
      },
      null,
      2,
    )}\n`,
  );
  log(`written to ${out}`);
  return 0;
}

const RELAY_EVENTS = 20_000;
const RELAY_PACKAGES = 1000;

interface RelayRun {
  client: (typeof clients)[number];
  eventsPerSecond: number;
  /** The relay process, its Postgres backends and the broker (bench/lib/relay-cpu.ts). */
  cpuMicrosPerEvent: number;
  /** The retranslator process alone. */
  relayCpuMicrosPerEvent: number;
}

/**
 * The relay behind the Sender with each client: the drain scenario of the
 * main bench (bench/scenarios/drain.ts) on the broker the clients share,
 * with kafka.producerClient set. A run counts only when the topic holds every
 * event relayed (warm-up and drain).
 */
async function relayRounds(rounds: number, resources: Resources, log: (line: string) => void): Promise<RelayRun[]> {
  const logDir = await mkdtemp(join(tmpdir(), "lpa-bench-kafka-clients-"));
  const runs: RelayRun[] = [];
  // The template database the drains clone (its broker, the tests' mock, is not used here).
  await startBenchBase(resources);
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? clients : ([...clients].reverse() as unknown as typeof clients);
    for (const client of order) {
      const kafka = await startKafkaMock({ build: "next" });
      const stopKafka = resources.add("kafka mock (next)", () => kafka.stop());
      try {
        const config = drainOnlyConfig({
          mode: "quick",
          drainEvents: RELAY_EVENTS,
          warmupEvents: 20_000,
          packages: RELAY_PACKAGES,
          partitions: PARTITIONS,
          overrides: { kafka: { producerClient: client } },
        });
        const ctx: BenchContext = { config, resources, kafka, logDir, profileDir: logDir, log };
        const drain = await relayDrain(ctx, `relay-${client}-${round + 1}`, RELAY_EVENTS, 1);
        // A fault-free drain sends each event once: more records than events would be
        // duplicates, fewer a loss; either way the run does not count.
        const stored = await recordsOnBroker(kafka.brokers);
        const expected = config.warmupEvents + RELAY_EVENTS;
        if (stored !== expected)
          throw new Error(`relay with ${client}: ${stored} records on the topic for ${expected} events`);
        const relayCpu = drain.cpu.cpuSeconds.retranslator ?? Number.NaN;
        const run: RelayRun = {
          client,
          eventsPerSecond: drain.eventsPerSecond,
          cpuMicrosPerEvent: drain.cpuMicrosPerEvent,
          relayCpuMicrosPerEvent: Math.round((relayCpu / RELAY_EVENTS) * 1e6),
        };
        runs.push(run);
        log(
          `relay round ${round + 1} ${client}: ${fmtInt(run.eventsPerSecond)} events/s, ${run.relayCpuMicrosPerEvent} µs CPU per event in the relay (${run.cpuMicrosPerEvent} with its Postgres and the broker)`,
        );
      } finally {
        await stopKafka();
      }
    }
  }
  // The children's logs, kept when a run failed (its error names the log).
  await rm(logDir, { recursive: true, force: true });
  return runs;
}

/** Records on every topic of the broker (high watermarks): the broker is fresh per run. */
async function recordsOnBroker(brokers: readonly string[]): Promise<number> {
  const admin = new Kafka({ brokers: [...brokers], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    let total = 0;
    for (const topic of await admin.listTopics()) {
      for (const p of await admin.fetchTopicOffsets(topic)) total += Number(p.high);
    }
    return total;
  } finally {
    await admin.disconnect();
  }
}
