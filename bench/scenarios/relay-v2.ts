import { readFile } from "node:fs/promises";
import type { Config } from "../../internal/config/config.js";
import type { Database } from "../../internal/database/database.js";
import { query } from "../../internal/database/query.js";
import { partitionOf } from "../../test/helpers/partitions.js";
import { installEventLog, readBack } from "../../test/helpers/topic-checker.js";
import { startKafkaMock } from "../../tools/kafka-mock/kafka-mock.js";
import type { BenchContext } from "../lib/context.js";
import { type CpuWindow, cpuWindow, postgresBackends, round } from "../lib/cpu.js";
import { checkDelivered, readOutbox, type Seeded, seedEvents, waitForEmptyOutbox } from "../lib/outbox.js";
import { sleep } from "../lib/procs.js";
import { relayCpuWindow } from "../lib/relay-cpu.js";
import {
  benchDatabase,
  benchTopic,
  type RunningRetranslator,
  startRetranslatorChild,
  type Tree,
} from "../lib/stack.js";
import { fmtInt, percentile } from "../lib/stats.js";
import { type BoundResult, boundResult, kafkaBound, relayRequestShapes } from "./drain.js";

// The relay's rows of issue "Relay v2": drains of a burst into an outbox whose
// statistics say "empty" (the state after a quiet period), each beside its
// raw bounds measured in the same run on the same burst, two instances against
// one, and a scaling simulation with a per-send delay.

export interface StaleDrain {
  label: string;
  events: number;
  packages: number;
  instances: number;
  seconds: number;
  eventsPerSecond: number;
  /** The relays, their Postgres backends and the broker (bench/lib/relay-cpu.ts). */
  cpu: CpuWindow;
  /** The bench and its backends meanwhile: the burst's INSERT and the polls, not counted. */
  observerCpu: CpuWindow;
  cpuMicrosPerEvent: number;
  /** From the relays' /metrics: claims, and those that leased nothing. */
  claims: number;
  emptyClaims: number;
  /** Records on the topic beyond the events committed: copies, which a drain without faults should not make. */
  extraRecords: number;
}

export interface StaleRow {
  relay: StaleDrain;
  /** SELECT 500 … FOR UPDATE SKIP LOCKED + DELETE, one transaction per 500, one connection. */
  sqlBound: BoundResult;
  kafkaBound: BoundResult;
  bound: number;
  ratio: number;
  /** Relay CPU per event against the two bounds' CPU per event added up. */
  cpuRatio: number;
}

const perEvent = (cpu: CpuWindow, events: number) =>
  round((Object.values(cpu.cpuSeconds).reduce((a, b) => a + b, 0) * 1e6) / events);

/**
 * A burst seeded without ANALYZE (unlike the drain rows, which model a live
 * database whose autovacuum keeps statistics fresh): it arrives while the
 * statistics still describe the emptied outbox.
 */
export function seedBurst(db: Database, events: number, packages: number): Promise<Seeded> {
  return seedEvents(db, events, packages, { analyze: false });
}

/** The outbox used, emptied and analyzed: "no rows" over pages that still exist. Autovacuum kept away. */
export async function makeStale(db: Database, warmEvents: number, packages: number): Promise<void> {
  await db.raw(`ALTER TABLE package_event SET (autovacuum_enabled = false)`);
  await seedBurst(db, warmEvents, packages);
  await db.raw(`DELETE FROM package_event`);
  await db.raw(`ANALYZE package_event`);
}

async function metricOf(relay: RunningRetranslator, name: string): Promise<number> {
  const text = await (await fetch(`${relay.metricsUrl}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

/** Relays started and warm, then the stale state, then the burst; the clock runs from its commit to an empty outbox. */
export async function staleDrain(
  ctx: BenchContext,
  label: string,
  events: number,
  packages: number,
  instances: number,
  options: { rttMs?: number; retranslator?: Tree } = {},
): Promise<StaleDrain> {
  const db = await benchDatabase(ctx);
  const topic = await benchTopic(ctx, label);
  const relays: RunningRetranslator[] = [];
  try {
    for (let i = 0; i < instances; i++) {
      relays.push(
        await startRetranslatorChild(ctx, `${label}-retranslator-${i + 1}`, {
          databaseUrl: db.url,
          topic,
          retranslator: options.retranslator,
        }),
      );
    }
    // Warm: the relays publish a burst first (V8 optimises kafkajs' encoder), which also leaves the pages behind.
    const warm = await seedBurst(db.db, ctx.config.warmupEvents, Math.min(packages, ctx.config.warmupEvents));
    await waitForEmptyOutbox(db.db, { lastId: warm.lastId, timeoutMs: 120_000 });
    await db.db.raw(`ALTER TABLE package_event SET (autovacuum_enabled = false)`);
    await db.db.raw(`ANALYZE package_event`);
    const before = await Promise.all(
      relays.map(
        async (r) =>
          [
            await metricOf(r, "logistic_package_api_retranslator_claims_total"),
            await metricOf(r, "logistic_package_api_retranslator_empty_claims_total"),
          ] as const,
      ),
    );
    if (options.rttMs !== undefined) await ctx.kafka.setRtt(1, options.rttMs);
    const endCpu = await relayCpuWindow(ctx, db.db, db.name, () => relays.map((r) => r.proc.pid));
    const seeded = await seedBurst(db.db, events, packages);
    const committed = performance.now();
    ctx.log(
      `${label}: ${fmtInt(events)} events over ${fmtInt(packages)} packages committed in ${seeded.seconds.toFixed(1)} s (stale statistics); draining`,
    );
    const empty = await waitForEmptyOutbox(db.db, {
      lastId: seeded.lastId,
      timeoutMs: Math.max(120_000, (events / 200) * 1000),
      reportMs: 5000,
      onProgress: (left) => ctx.log(`${label}: ~${fmtInt(left)} left`),
      alive: () => {
        const dead = relays.find((r) => !r.proc.isRunning());
        return dead ? `${dead.proc.name} exited during the drain; log: ${dead.proc.logPath}` : undefined;
      },
    });
    const cpu = await endCpu();
    if (options.rttMs !== undefined) await ctx.kafka.setRtt(1, 0);
    const delivered = await checkDelivered(db.db, ctx.kafka.brokers, topic, ctx.config.warmupEvents + events);
    if (delivered.extra > 0)
      ctx.log(`${label}: ${fmtInt(delivered.extra)} records on the topic beyond the events committed`);
    const after = await Promise.all(
      relays.map(
        async (r) =>
          [
            await metricOf(r, "logistic_package_api_retranslator_claims_total"),
            await metricOf(r, "logistic_package_api_retranslator_empty_claims_total"),
          ] as const,
      ),
    );
    const seconds = (empty - committed) / 1000;
    return {
      label,
      events,
      packages,
      instances,
      seconds: round(seconds, 2),
      eventsPerSecond: round(events / seconds),
      cpu: cpu.relay,
      observerCpu: cpu.observer,
      cpuMicrosPerEvent: perEvent(cpu.relay, events),
      extraRecords: delivered.extra,
      claims: after.reduce((s, a, i) => s + a[0] - before[i]![0], 0),
      emptyClaims: after.reduce((s, a, i) => s + a[1] - before[i]![1], 0),
    };
  } finally {
    await ctx.kafka.setRtt(1, 0).catch(() => undefined);
    for (const r of relays) await r.stop();
    await db.close();
  }
}

/**
 * The SQL bound of the issue: one connection, a transaction per 500 events
 * that selects them FOR UPDATE SKIP LOCKED and deletes them (two statements,
 * one commit), on the same stale burst. Returns the burst's rows (read before
 * the clock) for the kafkajs bound.
 */
export async function staleSqlBound(
  ctx: BenchContext,
  events: number,
  packages: number,
): Promise<{ bound: BoundResult; rows: Awaited<ReturnType<typeof readOutbox>> }> {
  const db = await benchDatabase(ctx);
  try {
    await makeStale(db.db, Math.min(events, ctx.config.warmupEvents), packages);
    await seedBurst(db.db, events, packages);
    const rows = await readOutbox(db.db);
    const endCpu = cpuWindow({ bench: () => [process.pid], postgres: () => postgresBackends(db.name) });
    const started = performance.now();
    let done = 0;
    for (let round = 0; round <= events; round++) {
      const n = await db.db.transaction(async (trx) => {
        const picked = await trx.raw(`SELECT id FROM package_event ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED`);
        const ids = (picked as { rows: { id: bigint }[] }).rows.map((r) => r.id);
        if (ids.length > 0)
          await trx.raw(`DELETE FROM package_event WHERE id = ANY(?::bigint[])`, [`{${ids.join(",")}}`]);
        return ids.length;
      });
      if (n === 0) break;
      done += n;
    }
    const seconds = (performance.now() - started) / 1000;
    const cpu = endCpu();
    if (done !== events) throw new Error(`SQL bound: deleted ${done} of ${events}`);
    return { bound: boundResult(events, seconds, cpu), rows };
  } finally {
    await db.close();
  }
}

/** One row: the relay on a stale burst, the SQL bound and the kafkajs bound on the same burst. */
export async function staleRow(
  ctx: BenchContext,
  config: Readonly<Config>,
  label: string,
  events: number,
  packages: number,
): Promise<StaleRow> {
  const relay = await staleDrain(ctx, label, events, packages, 1);
  ctx.log(`${label}: relay ${fmtInt(relay.eventsPerSecond)} ev/s, ${relay.claims} claims (${relay.emptyClaims} empty)`);
  const { bound: sqlBound, rows } = await staleSqlBound(ctx, events, packages);
  ctx.log(`${label}: SQL bound ${fmtInt(sqlBound.eventsPerSecond)} ev/s`);
  const kafka = await kafkaBound(ctx, config, rows, relayRequestShapes(config)[0]);
  ctx.log(`${label}: kafkajs bound ${fmtInt(kafka.eventsPerSecond)} ev/s`);
  const bound = Math.min(sqlBound.eventsPerSecond, kafka.eventsPerSecond);
  return {
    relay,
    sqlBound,
    kafkaBound: kafka,
    bound,
    ratio: round(relay.eventsPerSecond / bound, 2),
    cpuRatio: round(relay.cpuMicrosPerEvent / (sqlBound.cpuMicrosPerEvent + kafka.cpuMicrosPerEvent), 2),
  };
}

export interface LeaderlessRow {
  brokers: number;
  partitions: number;
  /** Events queued on the leader-less partition (more than one claim). */
  backlog: number;
  batchSize: number;
  /** The row's partition backoff ceiling: the relay retries partition 0 throughout the rounds. */
  retryBackoffMaxMs: number;
  /** Rounds of updates to healthy packages, each one transaction, while the partition has no leader. */
  rounds: number;
  healthyEvents: number;
  /**
   * Insert → acknowledged (the row deleted), ms, of the healthy events that were
   * acknowledged, polled every 10 ms. The clock starts before the INSERT is sent, so
   * it is an upper bound of commit → ack. A round's events usually go in one
   * request, so these are about one figure per round.
   */
  ackMs: { p50: number; p95: number; max: number };
  /** Healthy events not acknowledged within 10 s (left out of ackMs). */
  timedOut: number;
  /** Healthy events acknowledged within 2 s (the target: ≥ 0.95). */
  withinTwoSeconds: number;
  /** Partition 0's backlog still waiting when the rounds ended (all of it, if the leader really was away). */
  backlogStillWaiting: number;
  /** Times the relay backed partition 0 off (its log) before the rounds, and during them. */
  partitionBackoffs: { before: number; during: number };
  /** After the leader returned: the topic read back against every committed event. */
  lost: number;
  reordered: number;
  duplicated: number;
  malformed: number;
  unexpected: number;
  deadLettered: number;
}

/**
 * The leader-less partition row: a 3-broker cluster whose partition 0 loses its
 * leader (the state of a real cluster while a broker restarts); partition 0's
 * packages queue two claims' worth of events; then rounds of updates to 100
 * packages on the other partitions, each timed until its acknowledgement, while
 * the relay keeps retrying partition 0 (its backoff capped at 1 s here, so that
 * the retries overlap the rounds). Then the leader returns and the topic is read
 * back: all delivered, in order, none dead-lettered.
 */
export async function leaderlessRow(ctx: BenchContext, config: Readonly<Config>): Promise<LeaderlessRow> {
  const brokers = 3;
  const retryBackoffMaxMs = 1000;
  const kafka = await startKafkaMock({ brokers });
  const closeKafka = ctx.resources.add("kafka-mock, 3 brokers", () => kafka.stop());
  const on3 = { ...ctx, kafka };
  const db = await benchDatabase(ctx);
  let relay: RunningRetranslator | undefined;
  try {
    await installEventLog(db.db);
    const topic = await benchTopic(on3, "leaderless");
    const partitions = ctx.config.partitions;
    relay = await startRetranslatorChild(on3, "leaderless-retranslator", {
      databaseUrl: db.url,
      topic,
      retranslator: { retryBackoffMaxMs },
    });
    const running = relay;
    const alive = () => (running.proc.isRunning() ? undefined : `the relay exited; log: ${running.proc.logPath}`);
    const batchSize = config.retranslator.batchSize;
    // Warm: one event per package, so the relay knows the topic and V8 has optimised its path.
    const packages = 2000;
    // Without ANALYZE, as the stale rows: the claim's plans do not depend on statistics, and none are primed.
    const warm = await seedBurst(db.db, packages, packages);
    await waitForEmptyOutbox(db.db, { lastId: warm.lastId, timeoutMs: 60_000, alive });
    const ids = (await query<{ id: bigint }>(db.db, `SELECT id FROM package ORDER BY id`)).map((r) => r.id);
    const onZero = ids.filter((p) => partitionOf(p, partitions) === 0);
    const healthy = ids.filter((p) => partitionOf(p, partitions) !== 0);
    const perPackage = Math.ceil((2 * batchSize) / onZero.length);
    const backlog = perPackage * onZero.length;

    await kafka.setPartitionLeader(topic, 0, -1);
    await insertUpdates(db.db, onZero, perPackage);
    ctx.log(`leader-less: partition 0 of ${partitions} has no leader; ${fmtInt(backlog)} events queued on it`);
    // Let the relay run into the partition (claim it, fail, back it off) before the timed rounds.
    await sleep(1500);

    const rounds = 5;
    const ackMs: number[] = [];
    let timedOut = 0;
    const roundsStarted = Date.now();
    for (let round = 0; round < rounds; round++) {
      if (round > 0) await sleep(500);
      const target = healthy.slice(round * 100, round * 100 + 100);
      const sent = performance.now();
      const pending = new Set((await insertUpdates(db.db, target, 1)).map(String));
      const deadline = sent + 10_000;
      while (pending.size > 0 && performance.now() < deadline) {
        const left = await query<{ id: bigint }>(db.db, `SELECT id FROM package_event WHERE id = ANY(?::bigint[])`, [
          [...pending].map(BigInt),
        ]);
        const now = performance.now();
        const still = new Set(left.map((r) => String(r.id)));
        for (const id of pending) {
          if (still.has(id)) continue;
          pending.delete(id);
          ackMs.push(now - sent);
        }
        if (pending.size > 0) await sleep(10);
      }
      timedOut += pending.size;
    }
    const roundsEnded = Date.now();
    const backlogStillWaiting = (
      await query<{ n: number }>(
        db.db,
        `SELECT count(*)::int AS n FROM package_event WHERE package_id = ANY(?::bigint[])`,
        [onZero],
      )
    )[0]!.n;
    const backoffTimes = (await readFile(relay.proc.logPath, "utf8"))
      .split("\n")
      .filter((line) => line.includes('"partition":0,') && line.includes("partition failed; backing it off"))
      .map((line) => Date.parse((JSON.parse(line) as { time: string }).time));
    const partitionBackoffs = {
      before: backoffTimes.filter((t) => t < roundsStarted).length,
      during: backoffTimes.filter((t) => t >= roundsStarted && t <= roundsEnded).length,
    };

    await kafka.setPartitionLeader(topic, 0, 1);
    ctx.log("leader-less: the leader is back; draining partition 0's backlog");
    await waitForEmptyOutbox(db.db, { lastId: 0n, timeoutMs: 120_000, alive });
    const deadLettered = (
      await query<{ n: number }>(db.db, `SELECT count(*)::int AS n FROM package_event_dead_letter`)
    )[0]!.n;
    await relay.stop();
    relay = undefined;
    const { report } = await readBack(db.db, kafka.brokers, topic, undefined, 60_000);
    const sorted = [...ackMs].sort((a, b) => a - b);
    const healthyEvents = ackMs.length + timedOut;
    return {
      brokers,
      partitions,
      backlog,
      batchSize,
      retryBackoffMaxMs,
      rounds,
      healthyEvents,
      ackMs: {
        p50: round(percentile(sorted, 50), 1),
        p95: round(percentile(sorted, 95), 1),
        max: round(sorted.at(-1) ?? Number.NaN, 1),
      },
      timedOut,
      withinTwoSeconds: round(ackMs.filter((ms) => ms <= 2000).length / healthyEvents, 3),
      backlogStillWaiting,
      partitionBackoffs,
      lost: report.lost.length,
      reordered: report.reordered.length,
      duplicated: report.duplicated.length,
      malformed: report.malformed.length,
      unexpected: report.unexpected.length,
      deadLettered,
    };
  } finally {
    try {
      await relay?.stop();
    } finally {
      await db.close();
      await closeKafka();
    }
  }
}

/** `perPackage` Updated events for each of `packages`, interleaved, in one transaction; their ids. */
async function insertUpdates(db: Database, packages: readonly bigint[], perPackage: number): Promise<bigint[]> {
  const rows = await query<{ id: bigint }>(
    db,
    `INSERT INTO package_event (package_id, type, payload, traceparent)
     SELECT p.id, 'Updated', package_event_payload(p), '00-' || md5(n || '.' || p.id) || '-' || left(md5(p.id::text), 16) || '-01'
     FROM generate_series(1, ?::int) n CROSS JOIN package p
     WHERE p.id = ANY(?::bigint[])
     ORDER BY n, p.id
     RETURNING id`,
    [perPackage, packages],
  );
  return rows.map((r) => r.id);
}
