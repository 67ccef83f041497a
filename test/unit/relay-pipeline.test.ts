// The relay's pipeline (claim loop → in-flight pool → sender → acknowledger) against an in-memory
// outbox and sender: ordering, give-back, the dead-letter policy, fencing, partition lanes, outages
// and stop. The same guarantees against Postgres and the broker: test/retranslator-*.test.ts.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { EXPIRED_LEASES_TAKEN_OVER } from "../../internal/retranslator/claim-loop.js";
import { FakeSender } from "./fakes/fake-sender.js";
import { MemoryOutbox } from "./fakes/memory-outbox.js";
import { relayTestKit, testNotifications, writeMany } from "./fakes/relay.js";

const { start, soon, drained } = relayTestKit();

describe("relay pipeline", () => {
  test("publishes every event once, each package in id order, and empties the outbox", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    const ids = writeMany(outbox, 20, 7);
    const relay = start(outbox, sender);
    await drained(outbox);
    assert.equal(sender.published.length, 140);
    assert.equal(new Set(sender.published.map((e) => e.id)).size, 140);
    for (const [packageId, written] of ids) assert.deepEqual(sender.publishedOf(packageId), written);
    assert.deepEqual(sender.sentLate, []);
    assert.ok(outbox.claims > 140 / 8, `claims of at most batchSize events (${outbox.claims})`);
    assert.equal(await relay.value("published"), 140);
    assert.equal(await relay.value("deadLettered"), 0);
  });

  test("a drain of N full batches takes exactly N claims: none comes back empty after the last full one", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender(8);
    // 40 packages of 2 events: 10 claims of batchSize 8, each ending on a package's last event,
    // so no acknowledgement is awaited. The poll is out of reach: any claim after the tenth
    // would come from the claim loop claiming again at once after a full claim.
    writeMany(outbox, 40, 2);
    const relay = start(outbox, sender, { pollIntervalMs: 60_000 });
    await drained(outbox);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(sender.published.length, 80);
    assert.equal(await relay.value("claims"), 10);
    assert.equal(await relay.value("emptyClaims"), 0);
  });

  test("hot packages: acknowledgements that woke the loop while it was claiming buy no empty claim at the end", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender(4);
    // 4 packages of 16 events, batchSize 8: every claim cuts its package short, so the
    // acknowledgements of those packages wake the claim loop, often while it is claiming.
    // What they freed, the next claim sees; a wake left over from them must not make a
    // claim after the last one.
    writeMany(outbox, 4, 16);
    const relay = start(outbox, sender, { pollIntervalMs: 60_000 });
    await drained(outbox);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(sender.published.length, 64);
    assert.equal(await relay.value("emptyClaims"), 0);
  });

  test("an update committed during a claim, behind its package's event in flight, is sent once that event is acknowledged, not at the next poll", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender(3);
    const notifications = testNotifications();
    // Package 1 lives on partition 1, package 2 on partition 2; both partitions hold their
    // requests until the test lets them go. The poll is out of reach: only a NOTIFY or an
    // acknowledgement can wake the claim loop.
    const held = new Map<number, () => void>();
    const gates = new Map([1, 2].map((p) => [p, new Promise<void>((resolve) => held.set(p, resolve))]));
    sender.delay = (partition) => gates.get(partition) ?? Promise.resolve();
    const [first] = outbox.write(1n);
    start(outbox, sender, { pollIntervalMs: 60_000, listenNotify: true }, notifications.source);
    await soon(
      "package 1's first event in flight",
      () => sender.requests.length,
      (n) => n === 1,
    );

    // A claim that takes package 2's event; while it runs, package 1's update is committed
    // and its NOTIFY arrives. That claim cannot see the update; the next one sees it blocked
    // behind the first event, which is still in flight.
    let duringClaim: (() => void) | undefined = () => {
      outbox.write(1n);
      notifications.notify();
    };
    const claim = outbox.claimHeads.bind(outbox);
    outbox.claimHeads = async (request) => {
      const result = await claim(request);
      const during = duringClaim;
      duringClaim = undefined;
      during?.();
      return result;
    };
    outbox.write(2n);
    notifications.notify();
    await soon(
      "package 2's event in flight",
      () => sender.requests.length,
      (n) => n === 2,
    );

    // Package 1's first event is acknowledged: that alone must wake the claim of the update.
    held.get(1)!();
    await soon(
      "package 1's update published",
      () => sender.publishedOf(1n).length,
      (n) => n === 2,
    );
    assert.equal(sender.publishedOf(1n)[0], first);
    held.get(2)!();
  });

  test("a failed event's later events go back unsent, uncharged, and never overtake it", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    const [a1, a2, a3, a4] = outbox.write(1n, 4) as [bigint, bigint, bigint, bigint];
    const neighbour = outbox.write(4n, 3); // same partition as package 1
    sender.fault = (e) => (e.id === a2 && e.attempts === 1 ? { error: "broker said no", retriable: false } : undefined);
    start(outbox, sender);
    await drained(outbox);
    assert.deepEqual(sender.publishedOf(1n), [a1, a2, a3, a4]);
    assert.deepEqual(sender.publishedOf(4n), neighbour);
    const attempts = new Map(sender.published.map((e) => [e.id, e.attempts]));
    assert.equal(attempts.get(a2), 2, "the failed event spent one attempt");
    assert.equal(attempts.get(a3), 1, "its successors were given back without spending one");
    assert.equal(attempts.get(a4), 1);
    const first = sender.requests.find((r) => r.ids.includes(a2))!;
    assert.ok(first.ids.includes(a3), "the successor was in the failed request");
    assert.ok(
      sender.published.findIndex((e) => e.id === a3) > sender.published.findIndex((e) => e.id === a2),
      "and published only after the retry of its predecessor",
    );
  });

  test("an event that fails by itself dead-letters after maxAttempts and parks its package", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    const [bad, ...parked] = outbox.write(1n, 3) as [bigint, ...bigint[]];
    const healthy = outbox.write(2n, 5);
    sender.fault = (e) => (e.id === bad ? { error: "INVALID_RECORD (fake)", retriable: false } : undefined);
    const relay = start(outbox, sender, { maxAttempts: 3 });
    // The counter moves once the dead letter is written: wait for it, then look.
    await soon(
      "the dead letter",
      () => relay.value("deadLettered"),
      (n) => n === 1,
    );
    assert.ok(outbox.deadLetters.has(bad));
    await soon(
      "package 2 published",
      () => sender.publishedOf(2n).length,
      (n) => n === 5,
    );
    assert.deepEqual(sender.publishedOf(2n), healthy);
    assert.equal(sender.requests.filter((r) => r.ids.includes(bad)).length, 3, "sent maxAttempts times");
    assert.equal(outbox.deadLetters.get(bad)!.lastError, "INVALID_RECORD (fake)");
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(sender.publishedOf(1n), [], "the package's later events wait behind its dead letter");
    assert.deepEqual([...outbox.rows.keys()], parked, "and stay in the outbox, unleased once their claims end");
  });

  test("an event that can never be sent dead-letters at its first failure", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    const [huge] = outbox.write(7n, 1) as [bigint];
    sender.fault = (e) =>
      e.id === huge ? { error: "larger than kafka.maxRequestBytes", retriable: false, deadLetter: true } : undefined;
    start(outbox, sender, { maxAttempts: 5 });
    await soon(
      "the dead letter",
      () => outbox.deadLetters.has(huge),
      (x) => x,
    );
    assert.equal(sender.requests.filter((r) => r.ids.includes(huge)).length, 1);
    assert.equal(outbox.deadLetters.get(huge)!.event.attempts, 1);
  });

  test("retriable failures never dead-letter and spend no attempts, however many", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    const ids = outbox.write(3n, 4); // partition 0
    sender.leaderless.add(0);
    const relay = start(outbox, sender, { maxAttempts: 2 });
    await soon(
      "several failed requests",
      () => sender.requests.length,
      (n) => n >= 5,
    );
    sender.leaderless.delete(0);
    await drained(outbox);
    assert.deepEqual(sender.publishedOf(3n), ids);
    assert.equal(outbox.deadLetters.size, 0);
    assert.ok(
      sender.published.every((e) => e.attempts === 1),
      "each retriable failure gave its attempt back",
    );
    assert.ok((await relay.value("failed")) >= 5);
  });

  test("an event claimed more than maxAttempts times without an outcome dead-letters without a send", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    // Three claims already ended in crashes: this claim is its fourth.
    const [crasher] = outbox.write(5n, 1, 3) as [bigint];
    const [behind] = outbox.write(5n, 1);
    const other = outbox.write(6n, 2);
    const relay = start(outbox, sender, { maxAttempts: 3 });
    // The counter moves once the dead letter is written: wait for it, then look.
    await soon(
      "the dead letter",
      () => relay.value("deadLettered"),
      (n) => n === 1,
    );
    assert.ok(outbox.deadLetters.has(crasher));
    await soon(
      "package 6 published",
      () => sender.publishedOf(6n).length,
      (n) => n === 2,
    );
    assert.deepEqual(sender.publishedOf(6n), other);
    assert.ok(!sender.requests.some((r) => r.ids.includes(crasher) || r.ids.includes(behind!)), "never sent");
    assert.match(outbox.deadLetters.get(crasher)!.lastError!, /claimed 3 times without an outcome/);
    assert.ok(outbox.rows.has(behind!), "its successor stays in the outbox");
  });
});

describe("relay fencing", () => {
  test("no send starts once a lease has less than a send's time left", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    outbox.write(1n, 3);
    // A lease of 1 s and a send that may take 1.5 s: every claim is already past its sendBy.
    const relay = start(outbox, sender, { leaseSeconds: 1, sendBudgetMs: 1500 });
    await soon(
      "fenced events",
      () => relay.value("fenced"),
      (n) => n >= 6,
    );
    assert.equal(sender.requests.length, 0);
    await relay.running.stop();
    assert.equal(outbox.leased.length, 0);
    assert.ok(
      [...outbox.rows.values()].every((r) => r.event.attempts === 0),
      "fenced events were given back uncharged",
    );
  });

  test("events that waited in their lane past their sendBy go back instead of being sent", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    // Packages 3, 6, 9, 12 are all on partition 0: two claims of two fill one lane.
    for (const p of [3n, 6n, 9n, 12n]) outbox.write(p, 1);
    // The first request returns 400 ms after the second claim, whatever the machine's load.
    let slowFirst = true;
    sender.delay = async () => {
      if (!slowFirst) return;
      slowFirst = false;
      await soon(
        "the second claim",
        () => outbox.claims,
        (n) => n >= 2,
      );
      await new Promise((r) => setTimeout(r, 400));
    };
    // sendBy = claim + 1000 - 700: the second claim's events are late when the first request returns.
    const relay = start(outbox, sender, { batchSize: 2, leaseSeconds: 1, sendBudgetMs: 700 });
    await drained(outbox);
    assert.deepEqual(sender.sentLate, [], "no event went out past its sendBy");
    assert.ok((await relay.value("fenced")) >= 2);
    assert.equal(sender.published.length, 4);
    assert.ok(
      sender.published.every((e) => e.attempts === 1),
      "the fenced claim did not spend an attempt",
    );
  });

  test("an outcome that arrives after the claim was taken over changes nothing", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    const [id] = outbox.write(1n, 1) as [bigint];
    let release!: () => void;
    const stalled = new Promise<void>((r) => {
      release = r;
    });
    sender.delay = () => stalled;
    sender.fault = () => ({ error: "late failure", retriable: false });
    start(outbox, sender, { sendBudgetMs: 0 });
    await soon(
      "the send in flight",
      () => sender.requests.length,
      (n) => n === 1,
    );
    // The lease runs out while the send hangs; another instance's claim takes the event over.
    assert.deepEqual(outbox.takeOverLeases("relay-2"), [id]);
    release();
    await soon(
      "the stale outcome",
      () => outbox.staleOutcomes,
      (n) => n > 0,
    );
    const row = outbox.rows.get(id)!;
    assert.equal(row.lockedBy, "relay-2", "still the new owner's");
    assert.equal(row.event.attempts, 2, "and its attempts as the new claim left them");
    assert.equal(outbox.deadLetters.size, 0);
  });
});

describe("relay takeover", () => {
  test("a relay that died holding leases: once they run out, the claim takes them over and publishes in order", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    const ids = writeMany(outbox, 5, 4);
    const dead = await outbox.claimHeads({ owner: "dead-relay", limit: 12, leaseSeconds: 0.05 });
    assert.equal(dead.events.length, 12);
    const relay = start(outbox, sender);
    await drained(outbox);
    for (const [packageId, written] of ids) assert.deepEqual(sender.publishedOf(packageId), written);
    const taken = sender.published.filter((e) => e.attempts === 2).map((e) => e.id);
    assert.deepEqual(
      taken.sort((a, b) => Number(a - b)),
      dead.events.map((e) => e.id),
      "the dead relay's events were claimed a second time, the others once",
    );
    assert.equal(sender.published.length, 20);
    assert.equal(outbox.deadLetters.size, 0);
    const warnings = relay.logs.lines.filter((l) => l.msg === EXPIRED_LEASES_TAKEN_OVER);
    assert.equal(
      warnings.reduce((n, l) => n + Number(l.events), 0),
      12,
    );
  });

  test("a lease that has not run out is not taken: the package waits while other packages are published", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    outbox.write(1n, 2);
    outbox.write(2n, 2);
    await outbox.claimHeads({ owner: "live-relay", limit: 1, leaseSeconds: 30, cursor: 0n });
    start(outbox, sender);
    await soon(
      "package 2 published",
      () => sender.publishedOf(2n).length,
      (n) => n === 2,
    );
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(sender.publishedOf(1n), []);
    assert.equal(outbox.rows.get(1n)!.lockedBy, "live-relay");
  });
});

describe("relay partition lanes", () => {
  test("a leader-less partition backs off alone; the others keep flowing, and it catches up in order", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender(3);
    const ids = writeMany(outbox, 30, 3);
    sender.leaderless.add(0);
    const relay = start(outbox, sender, { retryBackoffMinMs: 20, retryBackoffMaxMs: 40 });
    const healthy = [...ids.keys()].filter((p) => sender.partitionOf(p) !== 0);
    await soon(
      "every package of partitions 1 and 2",
      () => healthy.filter((p) => sender.publishedOf(p).length === 3).length,
      (n) => n === healthy.length,
    );
    assert.ok(
      sender.published.every((e) => sender.partitionOf(e.packageId) !== 0),
      "nothing of partition 0 was published",
    );
    // Polled, not read once: between two backoffs partition 0 is briefly being retried (and
    // not backing off), and a busy machine can read the gauge in that moment.
    await soon(
      "partition 0 backing off",
      () => relay.value("partitionBackoff"),
      (n) => n > 0,
    );
    assert.ok(
      [...outbox.skippedPackages].some((p) => sender.partitionOf(p) === 0),
      "claims passed over partition 0's packages while it backed off",
    );
    sender.leaderless.delete(0);
    await drained(outbox);
    for (const [packageId, written] of ids) assert.deepEqual(sender.publishedOf(packageId), written);
    assert.equal(outbox.deadLetters.size, 0);
  });

  test("one slow partition does not hold the others", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender(2);
    const ids = writeMany(outbox, 10, 2);
    let open!: () => void;
    const opened = new Promise<void>((r) => {
      open = r;
    });
    sender.delay = (partition) => (partition === 0 ? opened : Promise.resolve());
    start(outbox, sender, { batchSize: 4 });
    const odd = [...ids.keys()].filter((p) => p % 2n === 1n);
    await soon(
      "partition 1's packages while partition 0 hangs",
      () => odd.every((p) => sender.publishedOf(p).length === 2),
      (x) => x,
    );
    open();
    await drained(outbox);
    for (const [packageId, written] of ids) assert.deepEqual(sender.publishedOf(packageId), written);
  });
});

describe("relay faults and stop", () => {
  test("without partition metadata events go back with backoff, spending no attempt", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    const ids = outbox.write(2n, 3);
    sender.routeError = new Error("KafkaJSConnectionError: connect ECONNREFUSED (fake)");
    const relay = start(outbox, sender, { maxAttempts: 1 });
    await soon(
      "failed routes",
      () => relay.value("failed"),
      (n) => n >= 3,
    );
    sender.routeError = undefined;
    await drained(outbox);
    assert.deepEqual(sender.publishedOf(2n), ids);
    assert.equal(outbox.deadLetters.size, 0);
  });

  test("a sender that throws gets its events given back unchanged", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    const ids = outbox.write(1n, 2);
    const send = sender.send.bind(sender);
    let threw = false;
    sender.send = async (events, partition) => {
      if (threw) return send(events, partition);
      threw = true;
      throw new Error("bug in a sender");
    };
    const relay = start(outbox, sender);
    await drained(outbox);
    assert.deepEqual(sender.publishedOf(1n), ids);
    assert.ok(sender.published.every((e) => e.attempts === 1));
    assert.ok(relay.logs.lines.some((l) => l.msg === "sender threw; giving the events back"));
  });

  test("database errors in claims and acknowledgements back off and lose or repeat nothing", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    const ids = writeMany(outbox, 5, 4);
    outbox.failNext("claimHeads", 2);
    outbox.failNext("deleteEvents", 2);
    const relay = start(outbox, sender);
    await drained(outbox);
    assert.equal(await relay.value("claimErrors"), 2);
    assert.equal(sender.published.length, 20, "each event published once");
    for (const [packageId, written] of ids) assert.deepEqual(sender.publishedOf(packageId), written);
  });

  test("stop waits for sends in flight, writes their outcomes and releases every other lease", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    writeMany(outbox, 40, 5);
    sender.delay = () => new Promise((r) => setTimeout(r, 30));
    const relay = start(outbox, sender, { batchSize: 20 });
    await soon(
      "some published",
      () => sender.published.length,
      (n) => n > 0,
    );
    await relay.running.stop();
    assert.equal(outbox.leased.length, 0, "no lease left behind");
    for (const event of sender.published) assert.ok(!outbox.rows.has(event.id), `published ${event.id} deleted`);
    assert.equal(outbox.rows.size + sender.published.length, 200);
    assert.ok(sender.closed);
  });

  test("stop gives back the claims whose outcome it could not write, published ones too", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    writeMany(outbox, 4, 2);
    const relay = start(outbox, sender);
    outbox.failNext("deleteEvents", 1_000_000);
    await soon(
      "all published",
      () => sender.published.length,
      (n) => n === 8,
    );
    await relay.running.stop();
    assert.equal(outbox.rows.size, 8, "the deletes failed: every row is still there");
    assert.equal(outbox.leased.length, 0, "and none is left leased until its lease runs out");
    assert.ok(
      [...outbox.rows.values()].every((r) => r.event.attempts === 0),
      "the attempts given back",
    );
  });

  test("stop cuts off a send that outlives shutdownTimeoutMs and still releases its leases", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender();
    outbox.write(1n, 3);
    sender.delay = () => new Promise<void>(() => undefined); // a broker that never answers
    const relay = start(outbox, sender, { shutdownTimeoutMs: 100 });
    await soon(
      "the send in flight",
      () => sender.requests.length,
      (n) => n === 1,
    );
    const began = Date.now();
    await relay.running.stop();
    // Not the broker that never answers: a bound far from forever, loose for a loaded machine.
    assert.ok(Date.now() - began < 10_000, `stopped in ${Date.now() - began} ms`);
    assert.equal(outbox.leased.length, 0);
    assert.ok(relay.logs.lines.some((l) => l.msg === "in-flight sends did not finish before the deadline"));
  });
});
