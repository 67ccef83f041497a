import { Kafka, logLevel, Partitioners, type PartitionMetadata } from "kafkajs";
import type { Config } from "../../internal/config/config.js";
import { claimEvents } from "../../internal/outbox/claim-events.js";
import { deleteEvents } from "../../internal/outbox/delete-events.js";
import type { OutboxEvent } from "../../internal/outbox/types.js";
import { toEventMessage } from "../../internal/retranslator/sender/event-message.js";
import type { BenchContext } from "../lib/context.js";
import { type CpuWindow, cpuWindow, postgresBackends, round } from "../lib/cpu.js";
import { checkDelivered, readOutbox, seedEvents, waitForEmptyOutbox } from "../lib/outbox.js";
import { childPids, memoryOf } from "../lib/procs.js";
import { relayCpuWindow } from "../lib/relay-cpu.js";
import { benchDatabase, benchTopic, type RunningRetranslator, startRetranslatorChild } from "../lib/stack.js";
import { fmtInt } from "../lib/stats.js";

export interface DrainResult {
  events: number;
  instances: number;
  seconds: number;
  eventsPerSecond: number;
  seedSeconds: number;
  /** Peak resident set (VmHWM) of each retranslator process, MiB. */
  peakRssMiB: number[];
  /** Resident set of each retranslator when it was ready, before any event (start-up: modules, tsx, pools). */
  readyRssMiB: number[];
  /** The relays, their Postgres backends and the broker (bench/lib/relay-cpu.ts). */
  cpu: CpuWindow;
  /** The bench and its backends meanwhile: seeding (INSERT, ANALYZE) and the polls, not counted. */
  observerCpu: CpuWindow;
  /** CPU of the relay's components together per event: robust to other load on the machine, unlike events/s. */
  cpuMicrosPerEvent: number;
  /** Records on the topic beyond the events committed: copies, which a drain without faults should not make. */
  extraRecords: number;
}

/**
 * Events relayed (or claimed, or produced) before the clock starts, so that
 * every contender is measured warm, as a relay that has run for a while is:
 * V8 needs tens of thousands of events to optimise kafkajs' encoder
 * (measured, kafkajs alone, successive rounds of 20,000 events: 1.91, 1.16,
 * 0.88, 0.79 CPU-s).
 */
/**
 * Relay drain: `instances` retranslator processes are started on an empty
 * outbox, warmed up with a small drain, and wait (ready, idle); then `events`
 * rows are committed in one statement and the clock runs from that commit
 * until the outbox is empty (every event acknowledged by the broker and
 * deleted). Starting the relays first keeps their start-up (tsx, migrations
 * check, broker connect) out of the figure.
 */
export async function relayDrain(
  ctx: BenchContext,
  label: string,
  events: number,
  instances: number,
): Promise<DrainResult> {
  const db = await benchDatabase(ctx);
  const topic = await benchTopic(ctx, label);
  const relays: RunningRetranslator[] = [];
  for (let i = 0; i < instances; i++) {
    relays.push(await startRetranslatorChild(ctx, `${label}-retranslator-${i + 1}`, { databaseUrl: db.url, topic }));
  }
  const readyRss = relays.map((r) => round((memoryOf(r.proc.pid)?.rssKiB ?? NaN) / 1024, 1));
  const warm = ctx.config.warmupEvents;
  ctx.log(`${label}: ${instances} retranslator(s) ready; warming up with ${fmtInt(warm)} events`);
  const warmSeed = await seedEvents(db.db, warm, ctx.config.packages);
  await waitForEmptyOutbox(db.db, { lastId: warmSeed.lastId, timeoutMs: 60_000 });
  ctx.log(`${label}: seeding ${fmtInt(events)} events over ${fmtInt(ctx.config.packages)} packages`);

  const peakRss = relays.map(() => 0);
  const sampler = setInterval(() => {
    relays.forEach((r, i) => {
      const m = memoryOf(r.proc.pid);
      if (m) peakRss[i] = Math.max(peakRss[i]!, m.hwmKiB);
    });
  }, 500);
  try {
    const endCpu = await relayCpuWindow(ctx, db.db, db.name, () => relays.map((r) => r.proc.pid));
    const seeded = await seedEvents(db.db, events, ctx.config.packages);
    const committed = performance.now();
    ctx.log(`${label}: seeded in ${seeded.seconds.toFixed(1)} s (committed); draining`);
    const empty = await waitForEmptyOutbox(db.db, {
      lastId: seeded.lastId,
      // Generous: a relay at 500 events/s still finishes; beyond that something is wrong.
      timeoutMs: Math.max(60_000, (events / 500) * 1000),
      reportMs: 3000,
      onProgress: (left) => {
        const done = events - left;
        const rate = done / ((performance.now() - committed) / 1000);
        ctx.log(`${label}: ${fmtInt(left)} left, ${fmtInt(rate)} events/s so far`);
      },
      alive: () => {
        const dead = relays.find((r) => !r.proc.isRunning());
        return dead ? `${dead.proc.name} exited during the drain; log: ${dead.proc.logPath}` : undefined;
      },
    });
    const cpu = await endCpu();
    const delivered = await checkDelivered(db.db, ctx.kafka.brokers, topic, warm + events);
    if (delivered.extra > 0)
      ctx.log(`${label}: ${fmtInt(delivered.extra)} records on the topic beyond the events committed`);
    relays.forEach((r, i) => {
      const m = memoryOf(r.proc.pid);
      if (m) peakRss[i] = Math.max(peakRss[i]!, m.hwmKiB);
    });
    const seconds = (empty - committed) / 1000;
    return {
      events,
      instances,
      seconds: round(seconds, 2),
      eventsPerSecond: round(events / seconds),
      seedSeconds: round(seeded.seconds, 2),
      peakRssMiB: peakRss.map((k) => round(k / 1024, 1)),
      readyRssMiB: readyRss,
      cpu: cpu.relay,
      observerCpu: cpu.observer,
      cpuMicrosPerEvent: perEvent(cpu.relay, events),
      extraRecords: delivered.extra,
    };
  } finally {
    clearInterval(sampler);
    for (const r of relays) await r.stop();
    await db.close();
  }
}

export interface BoundResult {
  events: number;
  seconds: number;
  eventsPerSecond: number;
  cpu: CpuWindow;
  cpuMicrosPerEvent: number;
  /** Produce requests sent (broker bound only). */
  requests?: number;
}

/** A bound's row from what it measured. */
export function boundResult(events: number, seconds: number, cpu: CpuWindow): BoundResult {
  return {
    events,
    seconds: round(seconds, 2),
    eventsPerSecond: round(events / seconds),
    cpu,
    cpuMicrosPerEvent: perEvent(cpu, events),
  };
}

/**
 * Bound (a), the database alone: the relay's own statements (claimEvents,
 * then deleteEvents of what was claimed) in a loop on one connection, same
 * batch size and lease, no broker. Also hands the seeded rows back (read
 * before the clock starts) for bound (b).
 */
export async function claimDeleteBound(
  ctx: BenchContext,
  config: Readonly<Config>,
  events: number,
): Promise<{ bound: BoundResult; rows: OutboxEvent[] }> {
  const db = await benchDatabase(ctx);
  const r = config.retranslator;
  const owner = `bench:${process.pid}`;
  // Bounded: every round deletes at least one row, or stops.
  const claimAndDeleteAll = async (limit: number) => {
    let done = 0;
    for (let round = 0; round <= limit; round++) {
      const batch = await claimEvents(db.db, owner, r.batchSize, r.leaseSeconds);
      if (batch.length === 0) break;
      await deleteEvents(
        db.db,
        batch.map((e) => e.id),
      );
      done += batch.length;
    }
    return done;
  };
  try {
    const warm = ctx.config.warmupEvents;
    await seedEvents(db.db, warm, ctx.config.packages);
    await claimAndDeleteAll(warm);
    const seeded = await seedEvents(db.db, events, ctx.config.packages);
    const rows = await readOutbox(db.db);
    ctx.log(`bound (a) claim+delete SQL: warmed up, seeded ${fmtInt(seeded.count)} events; claiming`);
    const endCpu = cpuWindow({ bench: () => [process.pid], postgres: () => postgresBackends(db.name) });
    const started = performance.now();
    const done = await claimAndDeleteAll(events);
    const seconds = (performance.now() - started) / 1000;
    const cpu = endCpu();
    if (done !== events) throw new Error(`bound (a): claimed and deleted ${done} of ${events} events`);
    return { bound: boundResult(events, seconds, cpu), rows };
  } finally {
    await db.close();
  }
}

/**
 * Bound (b), the broker alone: the same events, encoded by the relay's
 * toEventMessage, produced by kafkajs configured as the relay's KafkaSender
 * (acks=all, one in-flight request per connection, same retries and
 * timeouts), in the relay's batches (retranslator.batchSize events,
 * retranslator.maxInFlightBatches at once). No database.
 *
 * `shape`: "per-partition" splits a batch by partition, one produce call per
 * partition (the relay with retranslator.sharedRequests off); "per-batch"
 * sends a whole batch in one produce call, which kafkajs turns into one
 * request per broker (the relay's shared requests, the default).
 */
/** The kafkajs bound's request pattern that matches the relay's config, then the other one. */
export function relayRequestShapes(
  config: Readonly<Config>,
): ["per-partition" | "per-batch", "per-partition" | "per-batch"] {
  return config.retranslator.sharedRequests ? ["per-batch", "per-partition"] : ["per-partition", "per-batch"];
}

export async function kafkaBound(
  ctx: BenchContext,
  config: Readonly<Config>,
  rows: readonly OutboxEvent[],
  shape: "per-partition" | "per-batch",
): Promise<BoundResult> {
  const topic = await benchTopic(ctx, `kafka-${shape}`);
  const k = config.kafka;
  const kafka = new Kafka({
    clientId: `${k.clientId}-bench`,
    brokers: ctx.kafka.brokers,
    requestTimeout: k.requestTimeoutMs,
    connectionTimeout: Math.min(k.requestTimeoutMs, 3000),
    retry: { retries: k.sendRetries, initialRetryTime: 100, maxRetryTime: 2000 },
    logLevel: logLevel.ERROR,
  });
  const producer = kafka.producer({
    maxInFlightRequests: 1,
    idempotent: false,
    allowAutoTopicCreation: true,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  const disconnect = ctx.resources.add(`kafkajs producer (${shape})`, () => producer.disconnect());
  try {
    const admin = kafka.admin();
    await admin.connect();
    let partitionMetadata: PartitionMetadata[];
    try {
      partitionMetadata = (await admin.fetchTopicMetadata({ topics: [topic] })).topics[0]!.partitions;
    } finally {
      await admin.disconnect();
    }
    const partitioner = Partitioners.DefaultPartitioner();
    const partitionOf = (e: OutboxEvent) =>
      partitioner({ topic, partitionMetadata, message: { key: e.packageId.toString(), value: null } });
    const r = config.retranslator;
    const batches: OutboxEvent[][] = [];
    for (let i = 0; i < rows.length; i += r.batchSize) batches.push(rows.slice(i, i + r.batchSize));

    let requests = 0;
    const sendBatch = async (batch: readonly OutboxEvent[]) => {
      if (shape === "per-batch") {
        requests += 1;
        await producer.send({
          topic,
          acks: -1,
          timeout: k.requestTimeoutMs,
          messages: batch.map((e) => toEventMessage(e, partitionOf(e))),
        });
        return;
      }
      const groups = new Map<number, OutboxEvent[]>();
      for (const e of batch) {
        const p = partitionOf(e);
        const g = groups.get(p) ?? [];
        g.push(e);
        groups.set(p, g);
      }
      requests += groups.size;
      await Promise.all(
        [...groups].map(([partition, group]) =>
          producer.send({
            topic,
            acks: -1,
            timeout: k.requestTimeoutMs,
            messages: group.map((e) => toEventMessage(e, partition)),
          }),
        ),
      );
    };

    const warm = Math.min(rows.length, ctx.config.warmupEvents);
    for (let i = 0; i < warm; i += r.batchSize) await sendBatch(rows.slice(i, Math.min(i + r.batchSize, warm)));
    requests = 0;
    ctx.log(`bound (b) kafkajs alone, ${shape}: warmed up; producing ${fmtInt(rows.length)} events`);
    const endCpu = cpuWindow({ bench: () => [process.pid], "kafka-mock": () => childPids("kafka-mock") });
    const started = performance.now();
    let next = 0;
    // maxInFlightBatches workers, each taking the next batch: the relay's producer pool.
    await Promise.all(
      Array.from({ length: r.maxInFlightBatches }, async () => {
        while (next < batches.length) await sendBatch(batches[next++]!);
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const cpu = endCpu();
    return {
      events: rows.length,
      seconds: round(seconds, 2),
      eventsPerSecond: round(rows.length / seconds),
      cpu,
      cpuMicrosPerEvent: perEvent(cpu, rows.length),
      requests,
    };
  } finally {
    await disconnect();
  }
}

const perEvent = (cpu: CpuWindow, events: number) =>
  round((Object.values(cpu.cpuSeconds).reduce((a, b) => a + b, 0) * 1e6) / events);
