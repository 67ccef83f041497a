// Readiness under load: gRPC health Watch streams are capped (health.maxWatchers,
// 100) and share one cached probe with Check and /ready, so watchers and probe
// floods cost at most about one database ping per status.readinessCacheMs (1 s);
// /ready pings on a connection of its own, so it answers while every request
// connection is busy, and a /ready flood does not hold up requests. The
// retranslator's /ready works the same way beside a draining relay.
// Pings are counted by the metrics logistic_package_api_readiness_probes_total
// and logistic_package_api_retranslator_readiness_probes_total.
// Run: bash scripts/test.sh test/health-readiness.test.ts

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pg from "pg";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../pkg/grpc/health/v1/health_pb.js";
import { count } from "./helpers/database.js";
import { useFixture } from "./helpers/fixture.js";
import { type KafkaMock, startKafkaMock } from "./helpers/kafka-mock.js";
import { fastRetranslatorEnv, startTestRetranslator, type TestRetranslator } from "./helpers/retranslator.js";

const requestPoolName = "logistic-package-api/grpc-server";
const probePoolName = "logistic-package-api/grpc-server readiness";

// A request pool of two connections, easy to saturate; statements may wait
// on a lock for longer than the test holds it.
const smallPool = { database: { maxConnections: 2, statementTimeoutMs: 30000 } };
const fx = useFixture({ server: smallPool });
/** Every Watch opened by a test, cancelled at the end. */
const watchers = new AbortController();
fx.onTearDown(() => watchers.abort());

fx.onSetUp(() => {
  assert.equal(fx.server.config.database.maxConnections, 2, "the override is the config in use");
  assert.equal(fx.server.config.health.maxWatchers, 100, "the default cap");
  assert.equal(fx.server.config.status.readinessCacheMs, 1000, "the default cache");
});

async function probes(
  port = fx.server.ports.metrics,
  name = "logistic_package_api_readiness_probes_total",
): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const line = (await res.text()).split("\n").find((l) => l.startsWith(`${name} `));
  assert.ok(line !== undefined, `${name} is exported`);
  return Number(line.split(" ")[1]);
}

async function connectionsNamed(name: string): Promise<number> {
  const { rows } = (await fx.db.db.raw(
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ? AND application_name = ?`,
    [fx.db.name, name],
  )) as { rows: { n: number }[] };
  return rows[0]!.n;
}

/** A client on a connection of its own (HTTP/2 caps streams per connection). */
function healthOnOwnConnection(): Client<typeof Health> {
  return createClient(Health, createGrpcTransport({ baseUrl: fx.server.grpcUrl }));
}

interface OpenWatch {
  /** The first status sent, or the error the stream ended with. */
  first: Promise<ServingStatus>;
  cancel(): void;
}

function watch(client: Client<typeof Health>): OpenWatch {
  const own = new AbortController();
  const signal = AbortSignal.any([own.signal, watchers.signal]);
  let resolveFirst!: (s: ServingStatus) => void;
  let rejectFirst!: (e: unknown) => void;
  const first = new Promise<ServingStatus>((resolve, reject) => {
    resolveFirst = resolve;
    rejectFirst = reject;
  });
  void (async () => {
    try {
      for await (const res of client.watch({ service: "" }, { signal })) resolveFirst(res.status);
      rejectFirst(new Error("watch ended without a status"));
    } catch (err) {
      rejectFirst(err);
    }
  })();
  return { first, cancel: () => own.abort() };
}

async function ready(baseUrl = fx.server.statusUrl): Promise<number> {
  const res = await fetch(`${baseUrl}/ready`, { signal: AbortSignal.timeout(10_000) });
  await res.arrayBuffer();
  return res.status;
}

const valid = { Title: "box", Material: "cardboard", MaximumVolume: 2.5, Reusable: false };

describe("health Watch: capped, and one shared probe", () => {
  let clientA: Client<typeof Health>;
  let clientB: Client<typeof Health>;
  let firstFifty: OpenWatch[] = [];
  // Open watchers keep the shared probe fresh: close them so that the /ready
  // tests below count their own pings.
  after(() => watchers.abort());

  test("50 watchers and 200 Checks over 3 s cost at most 4 database pings", async () => {
    clientA = healthOnOwnConnection();
    clientB = healthOnOwnConnection();
    firstFifty = Array.from({ length: 50 }, () => watch(clientA));
    for (const w of firstFifty) assert.equal(await w.first, ServingStatus.SERVING);

    // The window opens before the first read and closes after the last, so it holds every ping counted.
    const started = performance.now();
    const before = await probes();
    const checks = Array.from({ length: 200 }, () => clientB.check({ service: "" }));
    for (const res of await Promise.all(checks)) assert.equal(res.status, ServingStatus.SERVING);
    await delay(3000);
    const pings = (await probes()) - before;
    // Probes start at least 1 s apart: in a window of T ms at most floor(T / 1000) + 1
    // (4 in the usual 3.0x s). Without sharing: 50 watchers each second plus 200 Checks.
    const bound = 1 + Math.floor((performance.now() - started) / 1000);
    assert.ok(pings >= 1 && pings <= bound, `pings with 50 watchers and 200 Checks: ${pings} (at most ${bound})`);
  });

  test("the 101st watcher gets ResourceExhausted naming the limit; a closed watcher frees its place", async () => {
    const more = Array.from({ length: 50 }, () => watch(clientB));
    for (const w of more) assert.equal(await w.first, ServingStatus.SERVING);

    const clientC = healthOnOwnConnection();
    const refused = watch(clientC);
    await assert.rejects(refused.first, (err: unknown) => {
      const e = ConnectError.from(err);
      assert.equal(e.code, Code.ResourceExhausted, e.message);
      assert.match(e.rawMessage, /too many health Watch streams open \(limit 100\)/);
      return true;
    });
    // Check is not capped.
    assert.equal((await clientC.check({ service: "" })).status, ServingStatus.SERVING);

    firstFifty[0]!.cancel();
    // The server notices the cancel when the stream closes: retry for a bounded while.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const retry = watch(clientC);
      try {
        assert.equal(await retry.first, ServingStatus.SERVING);
        break;
      } catch (err) {
        if (ConnectError.from(err).code !== Code.ResourceExhausted || Date.now() > deadline) throw err;
        await delay(50);
      }
    }
  });
});

describe("/ready has its own connection", () => {
  test("the probe's connection is not one of the request pool's", async () => {
    await ready();
    assert.equal(await connectionsNamed(probePoolName), 1, "one readiness connection");
  });

  test("/ready answers 200 while every request connection waits on a lock; the Creates finish afterwards", async () => {
    const locker = new pg.Client({ connectionString: fx.db.url });
    await locker.connect();
    try {
      await locker.query("BEGIN");
      await locker.query("LOCK TABLE package IN ACCESS EXCLUSIVE MODE");
      const creates = Array.from({ length: 4 }, () => fx.client.createPackageV1(valid));
      // Bounded wait until both request connections are stuck behind the lock.
      const deadline = Date.now() + 10_000;
      for (;;) {
        // Not through the locker: inside its transaction pg_stat_activity is a snapshot.
        const { rows } = (await fx.db.db.raw(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ? AND application_name = ? AND wait_event_type = 'Lock'`,
          [fx.db.name, requestPoolName],
        )) as { rows: { n: number }[] };
        if (rows[0]!.n === 2) break;
        assert.ok(Date.now() < deadline, `request connections waiting on the lock: ${rows[0]!.n} of 2`);
        await delay(50);
      }
      // Past the cache, so this /ready really pings the database.
      await delay(1100);
      const started = performance.now();
      const before = await probes();
      assert.equal(await ready(), 200, "ready while the request pool is saturated");
      const statuses = await Promise.all(Array.from({ length: 200 }, () => ready()));
      assert.ok(
        statuses.every((s) => s === 200),
        `200 concurrent /ready: ${[...new Set(statuses)]}`,
      );
      const pings = (await probes()) - before;
      const bound = 1 + Math.floor((performance.now() - started) / 1000);
      assert.ok(pings >= 1 && pings <= bound, `pings for 201 /ready: ${pings} (at most ${bound})`);

      await locker.query("ROLLBACK");
      for (const res of await Promise.all(creates)) assert.match(String(res.ID), /^[1-9][0-9]*$/);
    } finally {
      await locker.end();
    }
  });

  test("a /ready flood beside Creates: every Create succeeds, pings stay a couple", async () => {
    await delay(1100);
    // The window opens before the first read and closes after the last, so it holds every ping counted.
    const started = performance.now();
    const before = await probes();
    const [statuses, created] = await Promise.all([
      Promise.all(Array.from({ length: 200 }, () => ready())),
      Promise.all(Array.from({ length: 20 }, () => fx.client.createPackageV1(valid))),
    ]);
    assert.ok(statuses.every((s) => s === 200));
    assert.equal(new Set(created.map((c) => String(c.ID))).size, 20, "20 packages created");
    const pings = (await probes()) - before;
    const elapsedMs = performance.now() - started;
    const bound = 1 + Math.floor(elapsedMs / 1000);
    assert.ok(pings >= 1 && pings <= bound, `pings: ${pings} in ${Math.round(elapsedMs)} ms (at most ${bound})`);
  });
});

describe("the retranslator's /ready", () => {
  const topic = "readiness-events";
  let kafka: KafkaMock;
  let relay: TestRetranslator;

  before(async () => {
    kafka = await startKafkaMock();
    await kafka.createTopic(topic, 2);
    relay = await startTestRetranslator(fastRetranslatorEnv(fx.db.url, kafka.brokers, topic), smallPool);
  });

  after(async () => {
    await relay?.stop();
    await kafka?.stop();
  });

  test("a flood of 200 /ready costs a couple of pings on its own connection while the relay drains the outbox", async () => {
    const relayUrl = `http://127.0.0.1:${relay.ports.metrics}`;
    const relayProbes = () => probes(relay.ports.metrics, "logistic_package_api_retranslator_readiness_probes_total");
    await delay(1100);
    const started = performance.now();
    const before = await relayProbes();
    const [statuses] = await Promise.all([
      Promise.all(Array.from({ length: 200 }, () => ready(relayUrl))),
      Promise.all(Array.from({ length: 20 }, () => fx.client.createPackageV1(valid))),
    ]);
    assert.ok(
      statuses.every((s) => s === 200),
      `statuses: ${[...new Set(statuses)]}`,
    );
    const pings = (await relayProbes()) - before;
    const elapsedMs = performance.now() - started;
    const bound = 1 + Math.floor(elapsedMs / 1000);
    assert.ok(pings >= 1 && pings <= bound, `pings: ${pings} in ${Math.round(elapsedMs)} ms (at most ${bound})`);
    assert.equal(await connectionsNamed("logistic-package-api/retranslator readiness"), 1);

    const deadline = Date.now() + 30_000;
    while ((await count(fx.db.db, "package_event")) > 0) {
      assert.ok(Date.now() < deadline, "the outbox drains");
      await delay(100);
    }
  });
});
