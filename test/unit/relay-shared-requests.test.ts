// Shared requests: partitions that become ready together go out in one request (per broker in
// the Kafka sender), and a shared request that fails falls back to one request per partition,
// whose outcomes say which partition failed. Against an in-memory outbox and a sender that offers
// sendTogether; the same against the broker mock: test/retranslator-relay-v2.test.ts.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { FakeSender } from "./fakes/fake-sender.js";
import { MemoryOutbox } from "./fakes/memory-outbox.js";
import { relayTestKit, writeMany } from "./fakes/relay.js";

const { start, forget, soon, drained } = relayTestKit();

/** A package's published ids with repeats removed (consumers deduplicate by event id). */
const firstCopies = (sender: FakeSender, packageId: bigint) => [...new Set(sender.publishedOf(packageId))];

describe("relay shared requests", () => {
  test("a claim over several partitions goes out as shared requests, each package in order, once", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender(4, { shared: true });
    const ids = writeMany(outbox, 40, 3);
    const relay = start(outbox, sender, { batchSize: 16 });
    await drained(outbox);
    assert.equal(sender.published.length, 120, "each event published once");
    for (const [packageId, written] of ids) assert.deepEqual(sender.publishedOf(packageId), written);
    assert.ok(sender.sharedRequests.length > 0, "shared requests were made");
    assert.ok(
      sender.sharedRequests.every((r) => r.partitions.length > 1),
      "a shared request carries several partitions",
    );
    assert.ok(
      sender.requests.length < sender.sharedRequests.length,
      `mostly shared: ${sender.sharedRequests.length} shared, ${sender.requests.length} alone`,
    );
    assert.deepEqual(sender.sentLate, []);
    assert.equal(await relay.value("published"), 120);
  });

  test("a shared request that fails: each partition again alone, only the leader-less one backs off, nobody is charged", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender(3, { shared: true });
    // Like a broker that appended the healthy partitions' records before failing the request.
    sender.appendOnSharedFailure = true;
    sender.leaderless.add(0);
    const ids = writeMany(outbox, 30, 3);
    const relay = start(outbox, sender, { batchSize: 12, retryBackoffMinMs: 20, retryBackoffMaxMs: 40 });
    const healthy = [...ids.keys()].filter((p) => sender.partitionOf(p) !== 0);
    await soon(
      "every package of partitions 1 and 2",
      () => healthy.filter((p) => firstCopies(sender, p).length === 3).length,
      (n) => n === healthy.length,
    );
    for (const p of healthy) assert.deepEqual(firstCopies(sender, p), ids.get(p), `package ${p} in order`);
    assert.ok(
      sender.published.every((e) => sender.partitionOf(e.packageId) !== 0),
      "nothing of the leader-less partition was published",
    );
    const failedShared = sender.sharedRequests.filter((r) => r.partitions.includes(0));
    assert.equal(failedShared.length, 1);
    assert.deepEqual(
      sender.sharedRequests.slice(sender.sharedRequests.indexOf(failedShared[0]!) + 1),
      [],
      "after a failed shared request, requests go one partition at a time for a while",
    );
    assert.ok(
      sender.requests.some((r) => r.partition !== 0 && failedShared[0]!.ids.some((id) => r.ids.includes(id))),
      "the healthy partitions of the failed request were sent again alone",
    );
    // The gauge reads 0 for the moment between a backoff's end and the next failed try, so it is
    // watched rather than read once (a loaded machine can land the read in that moment).
    await soon(
      "partition 0 backing off",
      () => relay.value("partitionBackoff"),
      (seconds) => seconds > 0,
    );
    assert.ok(
      sender.published.every((e) => e.attempts === 1),
      "the shared failure charged no attempt to the healthy partitions' events",
    );
    sender.leaderless.delete(0);
    await drained(outbox);
    for (const [p, written] of ids) assert.deepEqual(firstCopies(sender, p), written, `package ${p} in order`);
    assert.equal(outbox.deadLetters.size, 0);
  });

  test("no shared request starts once a lease has less than a send's time left", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender(3, { shared: true });
    writeMany(outbox, 6, 2);
    const relay = start(outbox, sender, { leaseSeconds: 1, sendBudgetMs: 1500 });
    await soon(
      "fenced events",
      () => relay.value("fenced"),
      (n) => n >= 12,
    );
    assert.equal(sender.sharedRequests.length, 0);
    assert.equal(sender.requests.length, 0);
    assert.deepEqual(sender.sentLate, []);
  });

  test("a stop while lanes are about to share a request leaves nothing leased, no published row behind, each package a prefix in order", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender(3, { shared: true });
    const ids = writeMany(outbox, 9, 2);
    const relay = start(outbox, sender);
    await soon(
      "a first shared request",
      () => sender.sharedRequests.length,
      (n) => n > 0,
    );
    await relay.running.stop();
    forget(relay);
    // Whatever was claimed was either published (and deleted) or released: nothing stays leased.
    assert.ok([...outbox.rows.values()].every((r) => r.lockedBy === null));
    const published = new Set(sender.published.map((e) => e.id));
    for (const row of outbox.rows.values()) assert.ok(!published.has(row.event.id), "a published row was deleted");
    for (const [p, written] of ids) {
      const sent = firstCopies(sender, p);
      assert.deepEqual(sent, written.slice(0, sent.length), `package ${p}: a prefix, in order`);
    }
  });
});
