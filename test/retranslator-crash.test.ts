// Delivery guarantees of the retranslator under concurrency, crashes and
// shutdown (docs/design.md §3): two instances side by side, kill -9 mid-batch,
// lease takeover by a running instance, SIGTERM with sends in flight (slow
// and hung broker, second signal), a crash-looping event's parked package,
// and a start-up failure after claiming began.
//
// Every test has its own database (crash tests leave leased rows behind when
// they fail) and its own topic on the file's Kafka mock; the mock's broker
// latency (`setRtt`) is what keeps sends in flight long enough to crash or
// stop a relay in the middle of them.
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import net from "node:net";
import { after, before, type TestContext, test } from "node:test";
import { createDatabase, type Database } from "../internal/database/database.js";
import { PgPackageRepository } from "../internal/packages/package-repo.js";
import { EXPIRED_LEASES_TAKEN_OVER } from "../internal/retranslator/claim-loop.js";
import { type ConfigFile, writeConfigFile } from "./helpers/config.js";
import { count, createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { type KafkaMock, startKafkaMock } from "./helpers/kafka-mock.js";
import { poll } from "./helpers/poll.js";
import { freePort } from "./helpers/ports.js";
import {
  fastRetranslatorEnv,
  spawnRetranslator,
  startTestRetranslator,
  type TestRetranslator,
} from "./helpers/retranslator.js";
import {
  allDelivered,
  checkDelivery,
  committedEvents,
  type DeliveryReport,
  installEventLog,
  readBack,
  readTopic,
} from "./helpers/topic-checker.js";

let kafka: KafkaMock;
const configFiles: ConfigFile[] = [];

before(async () => {
  kafka = await startKafkaMock();
});

after(async () => {
  await kafka?.stop();
  for (const file of configFiles) await file.cleanup();
});

// ---------------------------------------------------------------- helpers

/** config.yml with some retranslator keys changed, in a temp file for CONFIG_PATH (child relays read it too). */
async function writeConfig(retranslator: Record<string, number | boolean>): Promise<string> {
  // A lease of a few seconds needs sends that fit into it (start-up rejects
  // a lease shorter than one send): short Kafka request timeouts, no retries.
  const lease = retranslator.leaseSeconds;
  const kafkaKeys =
    typeof lease === "number" && lease < 45 ? { requestTimeoutMs: Math.floor((lease * 1000) / 4), sendRetries: 0 } : {};
  const file = await writeConfigFile({ retranslator, kafka: kafkaKeys });
  configFiles.push(file);
  return file.path;
}

async function rows<T>(db: Database, sql: string, bindings: readonly string[] = []): Promise<T[]> {
  const result = await db.raw(sql, bindings as string[]);
  return (result as { rows: T[] }).rows;
}

async function leasedIds(db: Database, owner?: string): Promise<string[]> {
  const result =
    owner === undefined
      ? await rows<{ id: string }>(
          db,
          `SELECT id::text AS id FROM package_event WHERE locked_by IS NOT NULL ORDER BY package_event.id`,
        )
      : await rows<{ id: string }>(
          db,
          `SELECT id::text AS id FROM package_event WHERE locked_by = ? ORDER BY package_event.id`,
          [owner],
        );
  return result.map((r) => r.id);
}

async function leasedCount(db: Database): Promise<number> {
  return (await rows<{ n: number }>(db, `SELECT count(*)::int AS n FROM package_event WHERE locked_by IS NOT NULL`))[0]!
    .n;
}

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  if (m === null) throw new Error(`metric ${name} not found on port ${port}`);
  return Number(m[1]);
}

/** A tiny deterministic PRNG, so a failing run can be replayed. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/**
 * Writes events through the real repository (the API's statements, one per
 * change): `packages` creates, `updates` updates spread over them at random,
 * then `removes` removes. Writers commit `perTransaction` changes at a time
 * (commits are what limits the rate: each one queues a NOTIFY), and each
 * writer owns a share of the packages, so that transactions cannot deadlock.
 * Returns the number of events written.
 */
async function writeEvents(
  url: string,
  opts: { packages: number; updates: number; removes: number; seed: number; perTransaction?: number },
): Promise<number> {
  const writers = 8;
  const perTransaction = opts.perTransaction ?? 50;
  const writer = createDatabase({
    url,
    maxConnections: writers,
    statementTimeoutMs: 30_000,
    acquireTimeoutMs: 10_000,
    applicationName: "lpa-test-writer",
  });
  const random = lcg(opts.seed);
  const updatesOf: number[][] = Array.from({ length: writers }, () => []);
  for (let i = 0; i < opts.updates; i++) {
    const p = Math.floor(random() * opts.packages);
    updatesOf[p % writers]!.push(p);
  }
  const ids: bigint[] = [];
  const inTransactions = async <T>(
    items: readonly T[],
    fn: (repo: PgPackageRepository, item: T, i: number) => Promise<void>,
  ) => {
    for (let from = 0; from < items.length; from += perTransaction) {
      await writer.transaction(async (trx) => {
        const repo = new PgPackageRepository(trx);
        for (let i = from; i < Math.min(from + perTransaction, items.length); i++) await fn(repo, items[i]!, i);
      });
    }
  };
  try {
    await Promise.all(
      Array.from({ length: writers }, async (_, w) => {
        const mine = Array.from({ length: opts.packages }, (_, p) => p).filter((p) => p % writers === w);
        await inTransactions(mine, async (repo, p) => {
          ids[p] = await repo.create(
            { title: `Crash box ${p}`, material: "cardboard", maximumVolume: 10 + p, reusable: p % 2 === 0 },
            undefined,
          );
        });
        await inTransactions(updatesOf[w]!, async (repo, p, i) => {
          await repo.update(ids[p]!, { title: `v${i}`, maximumVolume: 1 + (i % 100) }, undefined);
        });
        await inTransactions(
          mine.filter((p) => p < opts.removes),
          async (repo, p) => {
            await repo.remove(ids[p]!, undefined);
          },
        );
      }),
    );
    return opts.packages + opts.updates + opts.removes;
  } finally {
    await writer.destroy();
  }
}

interface Relay {
  name: string;
  proc: ChildProcess;
  metricsPort: number;
  /** Parsed JSON log lines from stdout (non-JSON lines kept as { raw }). */
  lines: Record<string, unknown>[];
  stderr: string[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exited: boolean;
  /** Resolves with the lease owner name once the relay logged "retranslator started". */
  started(timeoutMs?: number): Promise<string>;
}

/** The real binary as a child process, with its logs collected for diagnostics. */
async function spawnRelay(name: string, env: Record<string, string>, port?: number): Promise<Relay> {
  const metricsPort = port ?? (await freePort());
  const proc = spawnRetranslator({ ...env, RETRANSLATOR_METRICS_PORT: String(metricsPort) });
  const lines: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  let buffer = "";
  proc.stdout!.setEncoding("utf8");
  proc.stdout!.on("data", (chunk: string) => {
    buffer += chunk;
    let nl: number;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line.trim() === "") continue;
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ raw: line });
      }
    }
  });
  proc.stderr!.setEncoding("utf8");
  proc.stderr!.on("data", (chunk: string) => stderr.push(chunk));
  const relay: Relay = {
    name,
    proc,
    metricsPort,
    lines,
    stderr,
    exited: false,
    exit: new Promise((resolve) => {
      // "close" (after "exit" and the end of its output): the last log lines, which the tests
      // read once it has exited, may still be in the pipe at "exit".
      proc.once("close", (code, signal) => {
        relay.exited = true;
        resolve({ code, signal });
      });
    }),
    async started(timeoutMs = 30_000) {
      const line = await poll(
        `${name} to log "retranslator started"`,
        async () => {
          if (relay.exited) throw new Error(`${name} exited before starting; stderr: ${stderr.join("")}`);
          return lines.find((l) => l.msg === "retranslator started");
        },
        (l) => l !== undefined,
        timeoutMs,
      );
      return String(line!.owner);
    },
  };
  return relay;
}

/** Waits for a child's exit for at most `timeoutMs`; undefined if it is still running. */
async function exitWithin(
  relay: Relay,
  timeoutMs: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const result = await Promise.race([
    relay.exit,
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  return result;
}

async function killHard(relay: Relay): Promise<void> {
  if (relay.exited) return;
  relay.proc.kill("SIGKILL");
  await relay.exit;
}

function hasLog(lines: readonly Record<string, unknown>[], msg: string): boolean {
  return lines.some((l) => l.msg === msg);
}

/**
 * Fails unless one of `sources` logs `msg` within a bounded wait. A relay
 * writes its log lines in sets, at the latest 100 ms after they were logged
 * (internal/logger/logger.ts), so a line about the drain's last claim may
 * still be on its way when the outbox is already empty.
 */
async function assertLogged(sources: readonly (readonly Record<string, unknown>[])[], msg: string, what: string) {
  const seen = await poll(
    what,
    () => sources.some((lines) => hasLog(lines, msg)),
    (found) => found,
    5000,
    20,
  ).catch(() => false);
  assert.ok(seen, what);
}

/** Everything a failing test needs to be understood: the tail of each relay's log. */
function dumpLogs(
  relays: readonly { name: string; lines: readonly Record<string, unknown>[]; stderr?: readonly string[] }[],
): void {
  for (const r of relays) {
    process.stderr.write(`\n----- ${r.name}: last log lines -----\n`);
    for (const l of r.lines.slice(-40)) process.stderr.write(`${JSON.stringify(l)}\n`);
    if (r.stderr !== undefined && r.stderr.length > 0)
      process.stderr.write(`stderr: ${r.stderr.join("").slice(-4000)}\n`);
  }
}

/** One test's world: a database with the event log, a topic, and the relays it started. */
interface World {
  /** A TAP diagnostic line, with the time since the test began (for reading a slow or failed run). */
  note(message: string): void;
  db: TestDatabase;
  topic: string;
  env: Record<string, string>;
  children: Relay[];
  inProcess: { name: string; relay: TestRetranslator }[];
}

async function withWorld(
  t: TestContext,
  topic: string,
  partitions: number,
  body: (w: World) => Promise<void>,
): Promise<void> {
  const began = Date.now();
  const note = (message: string) => t.diagnostic(`+${((Date.now() - began) / 1000).toFixed(1)}s ${message}`);
  const db = await createTestDatabase();
  const world: World = { note, db, topic, env: {}, children: [], inProcess: [] };
  try {
    await installEventLog(db.db);
    await kafka.createTopic(topic, partitions);
    world.env = fastRetranslatorEnv(db.url, kafka.brokers, topic);
    await body(world);
  } catch (err) {
    dumpLogs([...world.children, ...world.inProcess.map((r) => ({ name: r.name, lines: r.relay.logs.lines }))]);
    throw err;
  } finally {
    for (const child of world.children) await killHard(child);
    for (const { relay } of world.inProcess) await relay.stop().catch(() => undefined);
    await kafka.setRtt(1, 0).catch(() => undefined);
    await db.drop();
  }
}

/** A child relay in the world, once it has logged "retranslator started"; `owner` is its lease owner name. */
async function spawnIn(world: World, name: string, configPath: string): Promise<Relay & { owner: string }> {
  const relay = await spawnUnstarted(world, name, configPath);
  return Object.assign(relay, { owner: await relay.started() });
}

async function spawnUnstarted(world: World, name: string, configPath: string, metricsPort?: number): Promise<Relay> {
  const relay = await spawnRelay(name, { ...world.env, CONFIG_PATH: configPath }, metricsPort);
  world.children.push(relay);
  return relay;
}

async function startIn(world: World, name: string, configPath: string): Promise<TestRetranslator> {
  const relay = await startTestRetranslator({ ...world.env, CONFIG_PATH: configPath });
  world.inProcess.push({ name, relay });
  return relay;
}

/** Reads the whole topic back and compares it with what was committed. */
async function deliveryReport(world: World, expectedEvents: number): Promise<DeliveryReport> {
  const { committed, messages, report } = await readBack(world.db.db, kafka.brokers, world.topic);
  assert.equal([...committed.values()].flat().length, expectedEvents, "events committed");
  world.note(`topic read: ${messages.length} messages, ${report.duplicated.length} duplicates`);
  return report;
}

function assertDeliveredInOrder(report: DeliveryReport): void {
  assert.deepEqual(report.lost, [], "lost events");
  assert.deepEqual(report.reordered, [], "packages out of order");
  assert.deepEqual(report.malformed, [], "malformed messages");
  assert.deepEqual(report.unexpected, [], "messages never committed");
}

async function waitForEmptyOutbox(world: World, timeoutMs = 60_000): Promise<void> {
  await poll(
    "the outbox to empty",
    () => count(world.db.db, "package_event"),
    (n) => n === 0,
    timeoutMs,
    100,
  );
  world.note("outbox empty");
  assert.equal(await leasedCount(world.db.db), 0, "no row left leased");
}

/** Writes events (writeEvents) into the world's database and notes how many. */
async function writeNoted(world: World, opts: Parameters<typeof writeEvents>[1]): Promise<number> {
  const written = await writeEvents(world.db.url, opts);
  world.note(`${written} events written`);
  return written;
}

/** Until `atLeast` of the `written` events have left the outbox (a bounded wait, not a timing assertion). */
function untilPublished(world: World, who: string, written: number, atLeast: number): Promise<number> {
  const left = () => count(world.db.db, "package_event");
  return poll(`${who} to publish part of the backlog`, left, (n) => n <= written - atLeast, 30_000, 20);
}

/** Until relay `owner` has published `atLeast` of the `written` events and holds leases. */
function untilHoldingLeases(world: World, what: string, owner: string, written: number, atLeast: number) {
  const state = async () => ({
    left: await count(world.db.db, "package_event"),
    leased: (await leasedIds(world.db.db, owner)).length,
  });
  return poll(what, state, (v) => v.left <= written - atLeast && v.leased > 0, 30_000, 20);
}

/** Until a child relay has sends in flight (its processing gauge above 0). */
function untilInFlight(relay: Relay, timeoutMs: number, everyMs: number): Promise<number> {
  const processing = () => metric(relay.metricsPort, "logistic_package_api_retranslator_events_processing");
  return poll(`${relay.name} to have events in flight`, processing, (n) => n > 0, timeoutMs, everyMs);
}

async function killNine(relay: Relay): Promise<void> {
  relay.proc.kill("SIGKILL");
  assert.equal((await relay.exit).signal, "SIGKILL");
}

/** SIGTERM to a relay with nothing left in flight: it exits by itself, with code 0. */
async function stopsCleanly(relay: Relay): Promise<void> {
  relay.proc.kill("SIGTERM");
  assert.deepEqual(await exitWithin(relay, 20_000), { code: 0, signal: null });
}

/** Leases that expire within a test: a dead relay's events are taken over after a few seconds. */
const shortLeases = {
  leaseSeconds: 3,
  maintenanceIntervalMs: 500,
  batchSize: 50,
  maxInFlightBatches: 4,
  pollIntervalMs: 200,
};

/**
 * A child relay "relay A (killed)" with short leases. Slow acks (25 ms) keep its
 * batches in flight and published ones waiting for their delete, so it dies holding leases.
 */
async function relayToKill(world: World) {
  const configPath = await writeConfig(shortLeases);
  await kafka.setRtt(1, 25);
  return { configPath, victim: await spawnIn(world, "relay A (killed)", configPath) };
}

/**
 * The start of a shutdown scenario: 2,000 events written, and a child relay
 * with a long lease (whatever is free afterwards was released by the shutdown,
 * not taken over after its lease ran out) that has published part of them; the broker answers after `rttMs`.
 */
async function backlogInProgress(
  world: World,
  name: string,
  opts: { seed: number; shutdownTimeoutMs: number; maxInFlightBatches: number; rttMs: number },
) {
  const written = await writeNoted(world, { packages: 100, updates: 1900, removes: 0, seed: opts.seed });
  const configPath = await writeConfig({
    leaseSeconds: 60,
    batchSize: 50,
    maxInFlightBatches: opts.maxInFlightBatches,
    pollIntervalMs: 200,
    shutdownTimeoutMs: opts.shutdownTimeoutMs,
  });
  await kafka.setRtt(1, opts.rttMs);
  const a = await spawnIn(world, name, configPath);
  await untilPublished(world, name, written, 100);
  return { written, configPath, a };
}

/** SIGTERM; the exit within `withinMs` (undefined if still running), noted with the relay's last line. */
async function sigtermWithin(world: World, relay: Relay, withinMs: number) {
  const sigtermAt = Date.now();
  relay.proc.kill("SIGTERM");
  const exit = await exitWithin(relay, withinMs);
  const stopped = relay.lines.find((l) => l.msg === "retranslator stopped");
  world.note(
    `exit ${JSON.stringify(exit)} ${Date.now() - sigtermAt} ms after SIGTERM; stopped: ${JSON.stringify(stopped)}`,
  );
  return exit;
}

/** Only events a dead relay held leased may be published twice. */
function assertOnlyRepeated(report: DeliveryReport, leasedByDead: readonly string[], message: string): void {
  const mayRepeat = new Set(leasedByDead);
  assert.deepEqual(
    report.duplicated.filter((id) => !mayRepeat.has(id)),
    [],
    message,
  );
}

// ---------------------------------------------------------------- tests

test("two retranslators side by side: everything delivered once, in order, and both did work", async (t) => {
  await withWorld(t, "crash-two-instances", 6, async (world) => {
    const { note } = world;
    const configPath = await writeConfig({ batchSize: 50, maxInFlightBatches: 2, pollIntervalMs: 100 });
    const a = await startIn(world, "relay A", configPath);
    const b = await startIn(world, "relay B", configPath);
    assert.notEqual(a.owner, b.owner);

    // Written while both run: 120 packages, most of them updated many times.
    const written = await writeNoted(world, {
      packages: 120,
      updates: 2400,
      removes: 30,
      seed: 1,
      perTransaction: 10,
    });
    await waitForEmptyOutbox(world);

    const report = await deliveryReport(world, written);
    assertDeliveredInOrder(report);
    assert.deepEqual(report.duplicated, [], "no crash, no lease expiry: no duplicates");

    const publishedA = await metric(a.ports.metrics, "logistic_package_api_retranslator_events_published_total");
    const publishedB = await metric(b.ports.metrics, "logistic_package_api_retranslator_events_published_total");
    note(`${written} events; published by A ${publishedA}, by B ${publishedB}`);
    assert.ok(publishedA > 0 && publishedB > 0, `both instances published (A ${publishedA}, B ${publishedB})`);
    assert.equal(publishedA + publishedB, written, "each event published by exactly one instance");
    assert.equal(await metric(a.ports.metrics, "logistic_package_api_retranslator_events_processing"), 0);
    assert.equal(await metric(b.ports.metrics, "logistic_package_api_retranslator_events_processing"), 0);
    for (const r of [a, b]) assert.ok(!hasLog(r.logs.lines, EXPIRED_LEASES_TAKEN_OVER), "no lease expired");
  });
});

test("kill -9 mid-batch, then a replacement: nothing lost or reordered, duplicates only of the dead relay's leased events", async (t) => {
  await withWorld(t, "crash-kill9", 4, async (world) => {
    const { note } = world;
    const written = await writeNoted(world, { packages: 200, updates: 4780, removes: 20, seed: 2 });
    assert.equal(await count(world.db.db, "package_event"), written);
    const { configPath, victim: a } = await relayToKill(world);
    const ownerA = a.owner;
    await untilPublished(world, "relay A", written, 300);
    await killNine(a);

    const left = await count(world.db.db, "package_event");
    note(`killed with ${left} of ${written} events left, ${(await leasedIds(world.db.db)).length} leased`);
    assert.ok(left > 0 && left < written, `killed mid-backlog (${left} of ${written} left)`);
    const leasedByA = await leasedIds(world.db.db, ownerA);
    assert.ok(leasedByA.length > 0, "the dead relay left rows leased");
    assert.deepEqual(await leasedIds(world.db.db), leasedByA, "every leased row belongs to the dead relay");

    await kafka.setRtt(1, 0);
    const b = await spawnIn(world, "relay B (replacement)", configPath);
    const ownerB = b.owner;
    assert.notEqual(ownerB, ownerA);
    await waitForEmptyOutbox(world);
    await assertLogged(
      [b.lines],
      EXPIRED_LEASES_TAKEN_OVER,
      "the replacement took over the dead relay's expired leases",
    );

    const report = await deliveryReport(world, written);
    note(`the dead relay held ${leasedByA.length} leases`);
    assertDeliveredInOrder(report);
    assertOnlyRepeated(report, leasedByA, "only events leased by the dead relay may be published twice");

    await stopsCleanly(b);
  });
});

test("a running instance takes over a killed instance's leases once they expire", async (t) => {
  await withWorld(t, "crash-takeover", 4, async (world) => {
    const { note } = world;
    const written = await writeNoted(world, { packages: 150, updates: 2840, removes: 10, seed: 3 });
    const { configPath, victim: a } = await relayToKill(world);
    const ownerA = a.owner;
    // A has published part of the backlog and holds leases (in flight, or published and not yet deleted).
    await untilHoldingLeases(world, "relay A to publish some events and hold leases", ownerA, written, 200);

    // B starts while A holds claims, and is running when A dies.
    const b = await startIn(world, "relay B (survivor)", configPath);
    await killNine(a);
    const leasedByA = await leasedIds(world.db.db, ownerA);
    note(
      `A died holding ${leasedByA.length} leases; ${await count(world.db.db, "package_event")} of ${written} events left`,
    );
    assert.ok(leasedByA.length > 0, "A died holding leases");

    await kafka.setRtt(1, 0);
    await waitForEmptyOutbox(world);
    await assertLogged([b.logs.lines], EXPIRED_LEASES_TAKEN_OVER, "B's claims took over A's expired leases");
    assert.ok((await metric(b.ports.metrics, "logistic_package_api_retranslator_events_published_total")) > 0);

    const report = await deliveryReport(world, written);
    note(`the dead relay held ${leasedByA.length} leases`);
    assertDeliveredInOrder(report);
    assertOnlyRepeated(report, leasedByA, "only events leased by the dead relay may be published twice");
  });
});

test("kill -9 of one of three instances: the other two take over its events within one lease, nothing lost or reordered", async (t) => {
  await withWorld(t, "crash-three-kill9", 6, async (world) => {
    const { note } = world;
    const written = await writeNoted(world, { packages: 300, updates: 5700, removes: 0, seed: 11 });
    const { leaseSeconds, pollIntervalMs } = shortLeases;
    const { configPath, victim } = await relayToKill(world);
    const ownerA = victim.owner;
    // Slower acks while B and C start (about 2 s): A alone would otherwise drain the whole
    // backlog before they are up (it did, once the relay got faster), and the three would never
    // hold leases side by side. Back to relayToKill's 25 ms once they are: at 150 ms the
    // survivors' own claims outlive the 3 s lease while they wait in the pool.
    await kafka.setRtt(1, 150);
    const b = await spawnUnstarted(world, "relay B", configPath);
    const c = await spawnUnstarted(world, "relay C", configPath);
    await b.started();
    await c.started();
    await kafka.setRtt(1, 25);
    await untilHoldingLeases(world, "relay A to hold leases while all three publish", ownerA, written, 300);
    victim.proc.kill("SIGKILL");
    const killedAt = Date.now();
    assert.equal((await victim.exit).signal, "SIGKILL");
    const leasedByA = await leasedIds(world.db.db, ownerA);
    note(`A died holding ${leasedByA.length} leases; ${await count(world.db.db, "package_event")} of ${written} left`);
    assert.ok(leasedByA.length > 0, "A died holding leases");

    // Bounded wait (not a timing assertion): the lease, the survivors' poll interval (their
    // claims take the expired leases over), and a margin for the sends on this shared machine.
    await poll(
      "the dead relay's events to be published by the survivors",
      async () => {
        const result = await world.db.db.raw(
          `SELECT count(*)::int AS n FROM package_event WHERE id = ANY(?::bigint[])`,
          [`{${leasedByA.join(",")}}`],
        );
        return (result as { rows: { n: number }[] }).rows[0]!.n;
      },
      (n) => n === 0,
      leaseSeconds * 1000 + pollIntervalMs + 10_000,
      50,
    );
    note(`A's events taken over and published ${Date.now() - killedAt} ms after the kill`);
    await kafka.setRtt(1, 0);
    await waitForEmptyOutbox(world);
    await assertLogged([b.lines, c.lines], EXPIRED_LEASES_TAKEN_OVER, "a survivor took over the expired leases");

    const report = await deliveryReport(world, written);
    assertDeliveredInOrder(report);
    assertOnlyRepeated(report, leasedByA, "only the dead relay's leased events may repeat");
    for (const r of [b, c]) {
      await stopsCleanly(r);
    }
  });
});

test("an instance that joins a running one takes a share of the backlog at once: in order, no duplicates, no lease expired", async (t) => {
  await withWorld(t, "crash-join", 6, async (world) => {
    const { note } = world;
    const written = await writeEvents(world.db.url, { packages: 300, updates: 5700, removes: 0, seed: 12 });
    const configPath = await writeConfig({ batchSize: 50, maxInFlightBatches: 2, pollIntervalMs: 200 });
    // Slow acks: A alone would take a while, so B joins mid-backlog.
    await kafka.setRtt(1, 20);
    const a = await startIn(world, "relay A", configPath);
    await untilPublished(world, "relay A", written, 500);
    const leftAtJoin = await count(world.db.db, "package_event");
    const b = await startIn(world, "relay B (joins)", configPath);
    // B claims from its own place in the package range: it publishes while A is still busy.
    await poll(
      "relay B to publish",
      () => metric(b.ports.metrics, "logistic_package_api_retranslator_events_published_total"),
      (n) => n > 0,
      15_000,
      20,
    );
    const leftWhenBPublished = await count(world.db.db, "package_event");
    note(`B joined with ${leftAtJoin} left and published while ${leftWhenBPublished} were left`);
    assert.ok(leftWhenBPublished > 0, "B took work while there was a backlog");
    await kafka.setRtt(1, 0);
    await waitForEmptyOutbox(world);
    const publishedA = await metric(a.ports.metrics, "logistic_package_api_retranslator_events_published_total");
    const publishedB = await metric(b.ports.metrics, "logistic_package_api_retranslator_events_published_total");
    note(`published by A ${publishedA}, by B ${publishedB}`);
    assert.equal(publishedA + publishedB, written, "each event published by exactly one instance");
    const report = await deliveryReport(world, written);
    assertDeliveredInOrder(report);
    assert.deepEqual(report.duplicated, [], "no crash, no lease expiry: no duplicates");
    for (const r of [a, b]) assert.ok(!hasLog(r.logs.lines, EXPIRED_LEASES_TAKEN_OVER), "no lease expired");
  });
});

test("SIGTERM with sends in flight: drains, exits 0, leaves nothing leased; a restart delivers the rest exactly once", async (t) => {
  await withWorld(t, "crash-sigterm", 2, async (world) => {
    const shutdownTimeoutMs = 8000;
    const { written, configPath, a } = await backlogInProgress(world, "relay A (SIGTERM)", {
      seed: 4,
      shutdownTimeoutMs,
      maxInFlightBatches: 2,
      rttMs: 100,
    });
    await untilInFlight(a, 10_000, 10);
    // The deadline, plus the cleaner's last flush (2 s) and a margin for start-up of nothing.
    const exit = await sigtermWithin(world, a, shutdownTimeoutMs + 2000 + 5000);
    assert.deepEqual(exit, { code: 0, signal: null }, "exited by itself with code 0 within the shutdown deadline");
    assert.ok(hasLog(a.lines, "retranslator stopped"));
    assert.ok(!hasLog(a.lines, "in-flight sends did not finish before the deadline"), "the drain finished");

    assert.equal(await leasedCount(world.db.db), 0, "nothing left leased by the stopped relay");
    const left = await count(world.db.db, "package_event");
    assert.ok(left > 0, "stopped before the backlog was done");

    await kafka.setRtt(1, 0);
    const b = await spawnIn(world, "relay B (restart)", configPath);
    await waitForEmptyOutbox(world);

    const report = await deliveryReport(world, written);
    assertDeliveredInOrder(report);
    assert.deepEqual(report.duplicated, [], "a graceful stop that drained in time publishes nothing twice");
    await stopsCleanly(b);
  });
});

test("SIGTERM while the broker hangs: cut off at the deadline, leases released, exit 0 in time; a second signal forces exit 130", async (t) => {
  await withWorld(t, "crash-sigterm-hung", 4, async (world) => {
    const { note } = world;
    const shutdownTimeoutMs = 1000;
    const hung = 60_000;
    const { written, a } = await backlogInProgress(world, "relay A (SIGTERM, broker hung)", {
      seed: 5,
      shutdownTimeoutMs,
      maxInFlightBatches: 4,
      rttMs: 10,
    });
    // From now on the broker answers nothing (for longer than kafka.requestTimeoutMs):
    // whatever A sends next stays in flight.
    await kafka.setRtt(1, hung);
    await new Promise((r) => setTimeout(r, 500));
    await untilInFlight(a, 10_000, 20);
    // The deadline, the cleaner's last flush (up to 2 s), and a margin for a loaded machine. The
    // proof that the hung sends (which would wait out the 10 s request timeout) were cut off is
    // the log line below; the bound only keeps a relay that waits for them from passing.
    const exit = await sigtermWithin(world, a, shutdownTimeoutMs + 2000 + 5000);
    assert.ok(hasLog(a.lines, "in-flight sends did not finish before the deadline"), "the drain was cut off");
    assert.ok(hasLog(a.lines, "retranslator stopped"), "stop() completed");
    assert.deepEqual(exit, { code: 0, signal: null }, "exited by itself with code 0 within the shutdown deadline");
    assert.equal(await leasedCount(world.db.db), 0, "cut-off sends were released, not left leased");

    // Second signal while draining (a long deadline, the broker hung again once C runs): exit 130 at once.
    await kafka.setRtt(1, 0);
    const c = await spawnIn(
      world,
      "relay C (two signals)",
      await writeConfig({
        leaseSeconds: 2,
        maintenanceIntervalMs: 500,
        batchSize: 50,
        pollIntervalMs: 200,
        shutdownTimeoutMs: 60_000,
      }),
    );
    await kafka.setRtt(1, hung);
    await new Promise((r) => setTimeout(r, 500));
    await untilInFlight(c, 20_000, 20);
    c.proc.kill("SIGTERM");
    await poll(
      "relay C to start shutting down",
      async () => hasLog(c.lines, "shutting down"),
      (v) => v,
      10_000,
      10,
    );
    c.proc.kill("SIGINT");
    assert.deepEqual(await exitWithin(c, 10_000), { code: 130, signal: null }, "second signal forces exit 130");
    assert.ok(!hasLog(c.lines, "retranslator stopped"), "C was still draining");
    note(`C forced out; ${await leasedCount(world.db.db)} rows left leased by it`);

    await kafka.setRtt(1, 0);
    const b = await spawnIn(
      world,
      "relay B (restart)",
      await writeConfig({
        leaseSeconds: 2,
        maintenanceIntervalMs: 500,
        batchSize: 100,
        pollIntervalMs: 200,
      }),
    );
    note("B started");
    await waitForEmptyOutbox(world);

    // Sends cut off at the deadline may have landed after their release:
    // duplicates are allowed here; completeness and order are not negotiable.
    const report = await deliveryReport(world, written);
    assertDeliveredInOrder(report);
    await stopsCleanly(b);
  });
});

test("a crash-looping event is dead-lettered, and its package's parked events (more than a claim) do not stall other packages", async (t) => {
  await withWorld(t, "crash-loop-parked", 4, async (world) => {
    const { note } = world;
    const maxAttempts = 3;
    const batchSize = 50;
    // The hot package's events come first in the outbox: 4 claims' worth.
    const repo = new PgPackageRepository(world.db.db);
    const hot = await repo.create(
      { title: "Hot", material: "cardboard", maximumVolume: 1, reusable: false },
      undefined,
    );
    for (let i = 0; i < 4 * batchSize - 1; i++) await repo.update(hot, { title: `hot ${i}` }, undefined);
    const others = await writeNoted(world, { packages: 60, updates: 540, removes: 0, seed: 6 });
    // Its head was claimed maxAttempts times by relays that crashed while sending it.
    const [head] = await rows<{ id: string }>(
      world.db.db,
      `UPDATE package_event SET attempts = ${maxAttempts}, last_error = 'lease expired'
       WHERE id = (SELECT min(id) FROM package_event WHERE package_id = ?) RETURNING id::text AS id`,
      [hot.toString()],
    );

    const relay = await startIn(
      world,
      "relay",
      await writeConfig({ batchSize, maxInFlightBatches: 2, pollIntervalMs: 100, maxAttempts }),
    );
    const parked = 4 * batchSize - 1;
    const left = await poll(
      "every other package's events to leave the outbox",
      async () =>
        rows<{ package_id: string; n: number }>(
          world.db.db,
          `SELECT package_id::text, count(*)::int AS n FROM package_event GROUP BY 1`,
        ),
      (r) => r.length === 1 && r[0]!.package_id === hot.toString(),
      30_000,
      100,
    );
    note(`left in the outbox: ${JSON.stringify(left)}`);
    assert.deepEqual(left, [{ package_id: hot.toString(), n: parked }], "only the dead letter's package waits");
    const dead = await rows<{ id: string; package_id: string }>(
      world.db.db,
      `SELECT id::text, package_id::text FROM package_event_dead_letter`,
    );
    assert.deepEqual(dead, [{ id: head!.id, package_id: hot.toString() }]);
    assert.equal(await leasedCount(world.db.db), 0);

    const committed = await committedEvents(world.db.db);
    committed.delete(hot.toString());
    assert.equal([...committed.values()].flat().length, others);
    const messages = await readTopic(kafka.brokers, world.topic, allDelivered(committed));
    assert.deepEqual(
      messages.filter((m) => m.event.PackageID === hot),
      [],
      "nothing of the dead-lettered package was published",
    );
    const report = checkDelivery(committed, messages);
    assertDeliveredInOrder(report);
    assert.deepEqual(report.duplicated, []);
    assert.equal(await metric(relay.ports.metrics, "logistic_package_api_retranslator_events_dead_lettered_total"), 1);
  });
});

test("a relay whose start fails after it began claiming (metrics port taken) stops: exit 1, nothing left leased", async (t) => {
  await withWorld(t, "crash-start-failure", 2, async (world) => {
    const { note } = world;
    const written = await writeNoted(world, { packages: 50, updates: 450, removes: 0, seed: 7 });
    // The binary listens on config.yml's host (all interfaces): take the port there.
    const blocker = net.createServer();
    await new Promise<void>((resolve, reject) => {
      blocker.once("error", reject);
      blocker.listen(0, "0.0.0.0", () => resolve());
    });
    try {
      const port = (blocker.address() as net.AddressInfo).port;
      // Long lease and maintenance interval: a lease left behind would stay, and
      // a stop waiting out a maintenance sleep would not end within the bound.
      const configPath = await writeConfig({
        leaseSeconds: 600,
        maintenanceIntervalMs: 600_000,
        batchSize: 50,
      });
      const relay = await spawnUnstarted(world, "relay (metrics port taken)", configPath, port);
      const exit = await exitWithin(relay, 30_000);
      note(`exit ${JSON.stringify(exit)}; ${await count(world.db.db, "package_event")} of ${written} events left`);
      assert.deepEqual(
        exit,
        { code: 1, signal: null },
        "a failed start ends the process instead of relaying on without signal handlers",
      );
      assert.ok(relay.lines.some((l) => l.level === "fatal" && l.msg === "retranslator failed to start"));
      assert.equal(await leasedCount(world.db.db), 0, "whatever it had claimed was released");
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });
});
