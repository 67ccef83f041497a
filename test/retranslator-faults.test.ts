// Fault injection against the real retranslator wiring (docs/design.md §3): a broker
// outage, a Postgres connection loss, non-retriable produce errors (dead
// letters, requeue, discard) and retriable produce errors. Every test has its
// own database, Kafka mock cluster, topic and retranslator; the delivery
// checker compares what was committed with what a consumer reads back.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Database } from "../internal/database/database.js";
import { PgPackageRepository } from "../internal/packages/package-repo.js";
import type { ProducerClientName } from "../internal/retranslator/sender/produce-client.js";
import { EventType } from "../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";
import { count } from "./helpers/database.js";
import { packageApiClient } from "./helpers/grpc-client.js";
import { poll } from "./helpers/poll.js";
import { type RelayWorld, relayWorld } from "./helpers/relay-world.js";
import { produceRequests, readMetric, runAdmin, type TestRetranslator } from "./helpers/retranslator.js";
import { startTestServer } from "./helpers/server.js";
import { startTcpProxy } from "./helpers/tcp-proxy.js";
import { committedEvents, type DeliveryReport, type TopicMessage } from "./helpers/topic-checker.js";

const metric = (name: string) => `logistic_package_api_retranslator_${name}`;

// The tests that run with both producing clients: kafkajs (the default) and
// @platformatic/kafka (kafka.producerClient platformatic, which the bench measures
// behind the same Sender and which must keep the same guarantees there).
const producerClients = ["kafkajs", "platformatic"] as const;
const clientSuffix = (client: ProducerClientName) => (client === "kafkajs" ? "" : " (@platformatic/kafka)");
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function rows<T>(db: Database, sql: string, bindings: readonly unknown[] = []): Promise<T[]> {
  return ((await db.raw(sql, bindings as never)) as { rows: T[] }).rows;
}

interface DeadLetterRow {
  id: string;
  package_id: string;
  type: string;
  attempts: number;
  last_error: string;
}

const deadLetters = (db: Database) =>
  rows<DeadLetterRow>(
    db,
    `SELECT id::text, package_id::text, type, attempts, last_error FROM package_event_dead_letter ORDER BY package_event_dead_letter.id`,
  );

interface OutboxRow {
  id: string;
  package_id: string;
  type: string;
  attempts: number;
  locked_by: string | null;
}

const outbox = (db: Database) =>
  rows<OutboxRow>(
    db,
    `SELECT id::text, package_id::text, type, attempts, locked_by FROM package_event ORDER BY package_event.id`,
  );

/** Produce responses that carried an error, as kafkajs logs them (one line per failed Produce request). */
const produceErrors = (r: TestRetranslator) =>
  r.logs.lines.filter((l) => typeof l.msg === "string" && (l.msg as string).startsWith("kafkajs: Response Produce"));

/**
 * A relay for produce-error tests: quick polls and retries, `maxAttempts` before a
 * dead letter, kafkajs retrying each Produce `sendRetries` times itself. `m` reads
 * one of its retranslator metrics.
 */
async function produceErrorRelay(world: RelayWorld, maxAttempts: number, sendRetries: number) {
  const r = await world.startRelay({
    retranslator: {
      maxAttempts,
      pollIntervalMs: 200,
      maintenanceIntervalMs: 500,
      retryBackoffMinMs: 50,
      retryBackoffMaxMs: 500,
    },
    kafka: { requestTimeoutMs: 2000, sendRetries },
  });
  const m = (name: string) => readMetric(r.ports.metrics, metric(name));
  return { r, repo: new PgPackageRepository(world.db.db), m };
}

function assertNoLossNoReorder(report: DeliveryReport): void {
  assert.deepEqual(
    { lost: report.lost, reordered: report.reordered, malformed: report.malformed, unexpected: report.unexpected },
    { lost: [], reordered: [], malformed: [], unexpected: [] },
  );
}

const typesOf = (messages: TopicMessage[], packageId: bigint) =>
  messages.filter((m) => m.event.PackageID === packageId).map((m) => m.event.Type);

const box = (i: number | string) => ({ title: `Box ${i}`, material: "cardboard", maximumVolume: 10, reusable: false });

/**
 * Writes through `write` until `stop()` is called: creates new packages now
 * and then, and mostly updates existing ones, so that packages have several
 * events in the outbox at once.
 */
function startWriter(create: (i: number) => Promise<bigint>, update: (id: bigint, n: number) => Promise<void>) {
  let running = true;
  let writes = 0;
  const errors: unknown[] = [];
  const ids: bigint[] = [];
  const done = (async () => {
    for (let i = 0; i < 20; i++) ids.push(await create(i));
    writes += 20;
    let n = 0;
    while (running) {
      try {
        n += 1;
        if (n % 7 === 0) ids.push(await create(ids.length));
        else await update(ids[Math.floor(Math.random() * ids.length)]!, n);
        writes += 1;
      } catch (err) {
        errors.push(err);
        if (errors.length > 5) break;
      }
      await sleep(5);
    }
  })();
  return {
    get writes() {
      return writes;
    },
    ids,
    errors,
    async stop() {
      running = false;
      await done;
    },
  };
}

// Each client, and kafkajs' idempotent producer (replaced after each retriable failure:
// idempotent-producer.ts) on the mock build that checks its sequence numbers as Kafka does. The
// broker refuses connections while down, so it writes nothing it does not ack: for the
// idempotent producer this shows an outage's renewals do no harm; test/kafka-idempotent.test.ts
// is the one where they matter.
const outageRuns = [
  ...producerClients.map((producerClient) => ({ producerClient, idempotent: false })),
  { producerClient: "kafkajs" as const, idempotent: true },
];
for (const { producerClient, idempotent } of outageRuns)
  test(`a broker outage of several seconds: the backlog drains afterwards, nothing lost, per-package order holds${clientSuffix(producerClient)}${idempotent ? " (kafka.idempotent)" : ""}`, async (t) => {
    const world = await relayWorld(t, `faults-broker-down-${producerClient}${idempotent ? "-idempotent" : ""}`, 4, {
      producerClient,
      ...(idempotent && { build: "next" as const }),
    });
    const server = await startTestServer(world.db.url);
    world.defer(() => server.stop());
    const client = packageApiClient(server.grpcAddress);
    world.defer(() => client.close());
    // Failed sends during the outage are retriable: they are retried with
    // backoff and never spend the dead-letter budget (asserted below).
    const r = await world.startRelay({
      retranslator: {
        pollIntervalMs: 200,
        maintenanceIntervalMs: 500,
        retryBackoffMinMs: 200,
        retryBackoffMaxMs: 2000,
        maxAttempts: 10,
      },
      kafka: { requestTimeoutMs: 2000, sendRetries: 1, idempotent },
    });

    const writer = startWriter(
      async (i) =>
        BigInt((await client.createPackageV1({ Title: `Box ${i}`, Material: "cardboard", MaximumVolume: 10 + i })).ID),
      async (id, n) => {
        await client.updatePackageV1({ PackageID: id.toString(), Title: `Box ${id} v${n}` });
      },
    );
    world.defer(() => writer.stop());
    // Some traffic flows normally first.
    await poll(
      "first events published",
      () => readMetric(r.ports.metrics, metric("events_published_total")),
      (n) => n >= 30,
    );

    await world.kafka.brokerDown(1);
    // Only what may have been in flight at this moment can land without its ack.
    const atDown = new Set((await outbox(world.db.db)).map((e) => e.id));
    const writesAtDown = writer.writes;
    await sleep(4000);
    await world.kafka.brokerUp(1);
    const writesDuringOutage = writer.writes - writesAtDown;
    await sleep(1000);
    await writer.stop();
    assert.deepEqual(writer.errors, [], "API writes do not depend on Kafka");
    assert.ok(writesDuringOutage > 10, `writes went on during the outage (${writesDuringOutage})`);

    await world.untilOutboxEmpty("the outbox to drain", 60_000);
    assert.deepEqual(await deadLetters(world.db.db), [], "an outage dead-letters nothing");

    const { committed, report, messages } = await world.readBack();
    assertNoLossNoReorder(report);
    // Duplicates are only possible where a Produce request landed and its
    // response was lost when the broker went down (kafkajs or the retranslator
    // then sends it again), so only for events in the outbox at that moment.
    // Observed: none in our runs; tolerated within that set, and reported.
    if (report.duplicated.length > 0)
      t.diagnostic(`duplicates after the outage (ack lost): ${report.duplicated.join(",")}`);
    assert.deepEqual(
      report.duplicated.filter((id) => !atDown.has(id)),
      [],
      "events written after the broker went down arrive once",
    );
    assert.equal(new Set(messages.map((m) => m.event.ID)).size, [...committed.values()].flat().length);
    t.diagnostic(
      `${[...committed.values()].flat().length} events over ${committed.size} packages, ${writesDuringOutage} written during the outage`,
    );

    // The outage was really hit: sends failed and were retried with backoff.
    const failed = await readMetric(r.ports.metrics, metric("events_failed_total"));
    const retried = await readMetric(r.ports.metrics, metric("events_retried_total"));
    assert.ok(failed > 0 || retried > 0, `failed ${failed}, retried ${retried}`);
    t.diagnostic(`failed ${failed}, retried ${retried}, duplicates ${report.duplicated.length}`);
    assert.equal(await readMetric(r.ports.metrics, metric("events_dead_lettered_total")), 0);
  });

test("Postgres connection loss: the retranslator reconnects (claims, cleaner, LISTEN) and delivers everything in order", async (t) => {
  const world = await relayWorld(t, "faults-postgres-loss", 4);
  const target = new URL(world.db.url);
  const proxy = await startTcpProxy(target.hostname, Number(target.port || 5432));
  world.defer(() => proxy.close());
  const viaProxy = new URL(world.db.url);
  viaProxy.port = String(proxy.port);

  // Only the retranslator goes through the proxy; the writer uses the database directly.
  // leaseSeconds (2) is shorter than the cut (4 s): leases held at the cut expire,
  // so published events whose delete could not be written are sent again.
  const r = await world.startRelay(
    {
      database: { acquireTimeoutMs: 1000, statementTimeoutMs: 2000 },
      retranslator: {
        leaseSeconds: 2,
        pollIntervalMs: 200,
        maintenanceIntervalMs: 500,
        retryBackoffMinMs: 50,
        retryBackoffMaxMs: 500,
      },
      // Sends short enough for the 2 s lease (start-up rejects a lease shorter than a send).
      kafka: { requestTimeoutMs: 500, sendRetries: 0 },
    },
    { DATABASE_URL: viaProxy.toString() },
  );
  const repo = new PgPackageRepository(world.db.db);
  const writer = startWriter(
    (i) => repo.create(box(i), undefined),
    (id, n) => repo.update(id, { title: `Box ${id} v${n}` }, undefined),
  );
  world.defer(() => writer.stop());
  await poll(
    "first events published",
    () => readMetric(r.ports.metrics, metric("events_published_total")),
    (n) => n >= 30,
  );

  await proxy.cut();
  // Everything that may have been claimed before the cut is still in the outbox now
  // (a delete could not have been written since); anything later must arrive exactly once.
  const atCut = new Set((await outbox(world.db.db)).map((e) => e.id));
  const writesAtCut = writer.writes;
  await sleep(4000);
  const writesDuringCut = writer.writes - writesAtCut;
  const restoredAt = new Date();
  await proxy.restore();
  await sleep(1000);
  await writer.stop();
  assert.deepEqual(writer.errors, []);
  assert.ok(writesDuringCut > 10, `writes went on during the cut (${writesDuringCut})`);

  await world.untilOutboxEmpty("the outbox to drain", 60_000);
  assert.deepEqual(await deadLetters(world.db.db), []);

  // LISTEN came back on a new connection.
  await poll(
    "a new LISTEN connection",
    () =>
      rows<{ n: number }>(
        world.db.db,
        `SELECT count(*)::int AS n FROM pg_stat_activity
         WHERE datname = ? AND application_name = 'logistic-package-api/retranslator listen'
           AND query ILIKE 'LISTEN%' AND backend_start > ?`,
        [world.db.name, restoredAt],
      ),
    (v) => v[0]!.n === 1,
  );
  // Claims really failed during the cut, and resumed (the outbox drained).
  assert.ok((await readMetric(r.ports.metrics, metric("claim_errors_total"))) > 0);

  const { committed, report } = await world.readBack();
  assertNoLossNoReorder(report);
  const unexplained = report.duplicated.filter((id) => !atCut.has(id));
  assert.deepEqual(unexplained, [], "only events in the outbox at the cut may be published twice");
  t.diagnostic(
    `${[...committed.values()].flat().length} events, ${writesDuringCut} written during the cut, ` +
      `${report.duplicated.length} duplicates (all claimed before the cut)`,
  );
  assert.equal(await readMetric(r.ports.metrics, metric("events_dead_lettered_total")), 0);
});

test("a non-retriable produce error dead-letters the event after maxAttempts; requeue and discard release its package", async (t) => {
  const world = await relayWorld(t, "faults-dead-letters", 4);
  const maxAttempts = 3;
  const { r, repo, m } = await produceErrorRelay(world, maxAttempts, 2);
  const db = world.db.db;

  /**
   * With the outbox empty and nothing in flight, queues one INVALID_RECORD per
   * attempt (kafkajs does not retry a non-retriable error: one Produce request
   * per attempt, checked below), then creates a package whose Created event
   * uses them all up and is dead-lettered.
   */
  async function createDeadLettered(name: string): Promise<{ packageId: bigint; eventId: string }> {
    assert.equal(await count(db, "package_event"), 0, "relay idle");
    await world.kafka.pushErrors(0, maxAttempts, [87]);
    const packageId = await repo.create(box(name), undefined);
    const [dead] = await poll(
      `${name}'s event in the dead-letter table`,
      async () => (await deadLetters(db)).filter((d) => d.package_id === packageId.toString()),
      (d) => d.length === 1,
    );
    assert.equal(dead!.type, "Created");
    assert.equal(dead!.attempts, maxAttempts);
    assert.match(dead!.last_error, /failed the validation on broker/);
    return { packageId, eventId: dead!.id };
  }

  // --- requeue ---
  const a = await createDeadLettered("A");
  await poll(
    "dead_lettered_total 1",
    () => m("events_dead_lettered_total"),
    (n) => n === 1,
  );
  assert.equal(await m("events_failed_total"), maxAttempts);
  assert.equal(produceErrors(r).length, maxAttempts, "one Produce request per attempt: no queued error left over");

  await repo.update(a.packageId, { title: "A v2" }, undefined);
  await repo.update(a.packageId, { title: "A v3" }, undefined);
  const b = await repo.create(box("B"), undefined);
  const c = await repo.create(box("C"), undefined);
  // B and C flow past the dead letter; A's updates stay parked, never claimed.
  const parked = await poll(
    "only A's updates left in the outbox",
    () => outbox(db),
    (o) => o.length === 2 && o.every((e) => e.package_id === a.packageId.toString()),
  );
  assert.deepEqual(
    parked.map((e) => ({ type: e.type, attempts: e.attempts, locked_by: e.locked_by })),
    [
      { type: "Updated", attempts: 0, locked_by: null },
      { type: "Updated", attempts: 0, locked_by: null },
    ],
  );

  const listed = await runAdmin(world.db.url, ["dead-letters"]);
  assert.equal(listed.code, 0, listed.stderr);
  const entries = listed.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(entries.length, 1);
  assert.equal(entries[0]!.id, a.eventId);
  assert.equal(entries[0]!.packageId, a.packageId.toString());
  assert.equal(entries[0]!.attempts, maxAttempts);
  assert.equal(entries[0]!.parkedBehind, 2);
  assert.match(String(entries[0]!.lastError), /failed the validation on broker/);

  const requeued = await runAdmin(world.db.url, ["requeue", a.eventId]);
  assert.equal(requeued.code, 0, requeued.stderr);
  assert.match(requeued.stdout, new RegExp(`requeued event ${a.eventId}`));
  await world.untilOutboxEmpty("the outbox to drain after requeue", 30_000);
  assert.deepEqual(await deadLetters(db), []);

  // --- discard ---
  const d = await createDeadLettered("D");
  await poll(
    "dead_lettered_total 2",
    () => m("events_dead_lettered_total"),
    (n) => n === 2,
  );
  await repo.update(d.packageId, { title: "D v2" }, undefined);
  const dParked = await poll(
    "D's update parked",
    () => outbox(db),
    (o) => o.length === 1,
  );
  assert.equal(dParked[0]!.attempts, 0);
  const discarded = await runAdmin(world.db.url, ["discard", d.eventId]);
  assert.equal(discarded.code, 0, discarded.stderr);
  assert.match(discarded.stdout, new RegExp(`discarded event ${d.eventId}`));
  await world.untilOutboxEmpty("D's update to flow", 30_000);
  assert.deepEqual(await deadLetters(db), []);

  for (const command of ["requeue", "discard"]) {
    const unknown = await runAdmin(world.db.url, [command, "999999999"]);
    assert.equal(unknown.code, 1, `${command} of an unknown id`);
    assert.match(unknown.stderr, /not found/);
  }

  // The topic: everything committed except D's discarded Created, once each, in order.
  const committed = await committedEvents(db);
  const dEvents = committed.get(d.packageId.toString())!;
  assert.equal(dEvents[0], d.eventId);
  committed.set(d.packageId.toString(), dEvents.slice(1));
  const { report, messages } = await world.readBack(committed);
  assert.deepEqual(report, { lost: [], duplicated: [], reordered: [], malformed: [], unexpected: [] });
  assert.deepEqual(typesOf(messages, a.packageId), [EventType.Created, EventType.Updated, EventType.Updated]);
  assert.deepEqual(typesOf(messages, b), [EventType.Created]);
  assert.deepEqual(typesOf(messages, c), [EventType.Created]);
  assert.deepEqual(
    typesOf(messages, d.packageId),
    [EventType.Updated],
    "D's discarded Created never reaches the topic",
  );
  assert.ok(!messages.some((msg) => msg.event.ID.toString() === d.eventId));

  // Exactly the injected errors were hit, nothing else failed.
  assert.equal(await m("events_failed_total"), 2 * maxAttempts);
  assert.equal(produceErrors(r).length, 2 * maxAttempts);
  assert.equal(await m("events_dead_lettered_total"), 2);
});

for (const producerClient of producerClients)
  test(`retriable produce errors are retried and nothing is dead-lettered${clientSuffix(producerClient)}`, async (t) => {
    const world = await relayWorld(t, `faults-retriable-${producerClient}`, 4, { producerClient });
    const maxAttempts = 3;
    // sendRetries 1: two Produce requests per attempt. Four queued errors can
    // make at most two attempts of one event fail, so with maxAttempts 3 no
    // event may end up dead-lettered.
    const { repo, m } = await produceErrorRelay(world, maxAttempts, 1);

    // One event alone, relay idle: both requests of its first attempt fail
    // (the client retried once itself: had it not, the second error would
    // fail a second attempt), the retranslator retries it with backoff.
    await world.kafka.pushErrors(0, 2, [6, 7]);
    const first = await repo.create(box("first"), undefined);
    await world.untilOutboxEmpty("the first event to be published", 30_000);
    assert.equal(await m("events_failed_total"), 1);
    assert.equal(await m("events_retried_total"), 1);

    // A burst of events with errors queued ahead of it: absorbed by the
    // client's retries or by the retranslator's, whichever the interleaving gives.
    const injected = [6, 7, 6, 7];
    await world.kafka.pushErrors(0, injected.length, injected);

    const ids: bigint[] = [];
    for (let i = 0; i < 24; i++) ids.push(await repo.create(box(i), undefined));
    for (let round = 0; round < 3; round++) {
      for (const id of ids) await repo.update(id, { title: `Box ${id} r${round}` }, undefined);
    }

    await world.untilOutboxEmpty("the outbox to drain", 30_000);
    assert.deepEqual(await deadLetters(world.db.db), []);
    // Every queued error met a Produce request of the retranslator: none is
    // left over. One more queued error and one more event tell: the client's own
    // retry absorbs the one error, so the event's first attempt fails only if an
    // earlier error was still waiting ahead of it.
    const failedBefore = await m("events_failed_total");
    await world.kafka.pushErrors(0, 1, [6]);
    const last = await repo.create(box("last"), undefined);
    await world.untilOutboxEmpty("the last event to be published", 30_000);
    assert.equal(await m("events_failed_total"), failedBefore, "the next event went out at its first attempt");

    const { report, messages } = await world.readBack();
    // The mock rejects these requests before appending: no copy lands, so no duplicates either.
    assert.deepEqual(report, { lost: [], duplicated: [], reordered: [], malformed: [], unexpected: [] });
    assert.deepEqual(typesOf(messages, first), [EventType.Created]);
    assert.deepEqual(typesOf(messages, last), [EventType.Created]);
    assert.equal(await m("events_dead_lettered_total"), 0);
    assert.equal(await m("events_published_total"), 1 + 24 * 4 + 1);
    t.diagnostic(`failed ${await m("events_failed_total")}, retried ${await m("events_retried_total")}`);
  });

for (const producerClient of producerClients)
  test(`a record the broker rejects is dead-lettered alone, not with the packages that shared its request${clientSuffix(producerClient)}`, async (t) => {
    // One partition: a claim of A's and B's events is one Produce request.
    const world = await relayWorld(t, `faults-poison-neighbour-${producerClient}`, 1, { producerClient });
    const maxAttempts = 3;
    const { r } = await produceErrorRelay(world, maxAttempts, 2);
    // The broker refuses A's record (say, too large) and accepts B's. The mock
    // cannot look into requests, so its answers are queued in the order the
    // relay asks: A+B together → rejected; then each package alone, A → rejected,
    // B → accepted (0); then A's two remaining attempts → rejected.
    await world.kafka.pushErrors(0, 5, [87, 87, 0, 87, 87]);
    let a = 0n;
    let b = 0n;
    // One transaction: both events become claimable together and travel in one request.
    await world.db.db.transaction(async (trx) => {
      const repo = new PgPackageRepository(trx);
      a = await repo.create(box("A"), undefined);
      b = await repo.create(box("B"), undefined);
    });
    await world.untilOutboxEmpty("A dead-lettered and B published", 30_000);

    const dead = await deadLetters(world.db.db);
    assert.deepEqual(
      dead.map((d) => ({ package_id: d.package_id, attempts: d.attempts })),
      [{ package_id: a.toString(), attempts: maxAttempts }],
      "only the package whose record was refused is dead-lettered",
    );
    // Exactly the requests expected above were made (no queued answer left over),
    // and only A was charged attempts.
    const requests = async (result: "published" | "failed") =>
      (await produceRequests(r, "one", result)) + (await produceRequests(r, "shared", result));
    assert.deepEqual(
      { failed: await requests("failed"), published: await requests("published") },
      { failed: 4, published: 1 },
    );
    assert.equal(await readMetric(r.ports.metrics, metric("events_failed_total")), maxAttempts);

    const committed = await committedEvents(world.db.db);
    committed.delete(a.toString());
    const { report, messages } = await world.readBack(committed);
    assert.deepEqual(report, { lost: [], duplicated: [], reordered: [], malformed: [], unexpected: [] });
    assert.deepEqual(typesOf(messages, b), [EventType.Created]);
    assert.deepEqual(typesOf(messages, a), []);
  });
