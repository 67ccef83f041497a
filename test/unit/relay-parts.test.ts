// The relay's parts one by one: the dead-letter policy, a failed request's outcome, the send budget
// that fencing and config validation rest on, the Kafka message of an event, the acknowledger's sets
// and retries, and the in-flight pool's bound per partition.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  MultipleErrors,
  NetworkError,
  ProtocolError,
  ResponseError,
  TimeoutError,
  UserError,
} from "@platformatic/kafka";
import kafkajs from "kafkajs";
import { Registry } from "prom-client";
import type { OutboxEvent } from "../../internal/outbox/types.js";
import { Acknowledger } from "../../internal/retranslator/acknowledger.js";
import { deadLetters, exhaustedAtClaim } from "../../internal/retranslator/dead-letter-policy.js";
import { runMaintenance } from "../../internal/retranslator/maintenance.js";
import { RetranslatorMetrics } from "../../internal/retranslator/metrics.js";
import { toEventMessage } from "../../internal/retranslator/sender/event-message.js";
import { PartitionNotReadyError } from "../../internal/retranslator/sender/produce-client.js";
import { isRetriable, isTooLarge } from "../../internal/retranslator/sender/produce-errors.js";
import { sendBudgetMs } from "../../internal/retranslator/sender/send-budget.js";
import { failAll } from "../../internal/retranslator/sender/sender.js";
import { EventType, PackageEventSchema } from "../../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";
import { captureLogs } from "../helpers/logs.js";
import { poll } from "../helpers/poll.js";
import { FakeSender } from "./fakes/fake-sender.js";
import { MemoryOutbox } from "./fakes/memory-outbox.js";
import { startTestRelay } from "./fakes/relay.js";

const event = (id: bigint, packageId: bigint, attempts = 1): OutboxEvent => ({
  id,
  packageId,
  type: "Created",
  payload: `{"id":"${packageId}"}`,
  created: new Date("2026-11-30T10:00:00.123Z"),
  traceparent: null,
  tracestate: null,
  reason: null,
  attempts,
  lease: "lease-1",
});

describe("dead-letter policy", () => {
  test("a failure dead-letters when the event can never be sent, or by itself used maxAttempts; an outage never", () => {
    const cases: [retriable: boolean, deadLetter: boolean | undefined, attempts: number, dead: boolean][] = [
      [false, undefined, 2, false],
      [false, undefined, 3, true],
      [false, undefined, 4, true],
      [false, true, 1, true],
      [true, undefined, 3, false],
      [true, undefined, 100, false],
      [true, true, 1, false],
    ];
    for (const [retriable, deadLetter, attempts, dead] of cases) {
      const failure = { event: event(1n, 1n, attempts), error: "e", retriable, deadLetter };
      assert.equal(deadLetters(failure, 3), dead, JSON.stringify({ retriable, deadLetter, attempts }));
    }
  });

  test("an event is exhausted at claim once claimed more than maxAttempts times", () => {
    assert.equal(exhaustedAtClaim(event(1n, 1n, 3), 3), false);
    assert.equal(exhaustedAtClaim(event(1n, 1n, 4), 3), true);
  });
});

describe("send outcome and budget", () => {
  test("a failed request charges the first event of each package; the rest wait unsent", () => {
    const events = [event(1n, 10n), event(2n, 11n), event(3n, 10n), event(4n, 12n), event(5n, 11n)];
    const outcome = failAll(events, "REQUEST_TIMED_OUT", true);
    assert.deepEqual(
      outcome.failed.map((f) => [f.event.id, f.error, f.retriable]),
      [
        [1n, "REQUEST_TIMED_OUT", true],
        [2n, "REQUEST_TIMED_OUT", true],
        [4n, "REQUEST_TIMED_OUT", true],
      ],
    );
    assert.deepEqual(
      outcome.unsent.map((e) => e.id),
      [3n, 5n],
    );
    assert.deepEqual(outcome.published, []);
  });

  test("one send's budget: (connect + request timeout) per attempt, plus the backoff between attempts", () => {
    // Defaults: requestTimeoutMs 10 s, sendRetries 2; connecting takes at most 3 s.
    assert.equal(sendBudgetMs({ requestTimeoutMs: 10_000, sendRetries: 2 }), (3000 + 10_000) * 3 + 2000 * 2);
    // Below 3 s the connection timeout is the request timeout.
    assert.equal(sendBudgetMs({ requestTimeoutMs: 500, sendRetries: 0 }), 1000);
  });
});

describe("a produce failure, by client", () => {
  // What KafkaSender does with a failure rests on these two answers: retriable backs the
  // partition off and charges no dead letter; too large splits the request or dead-letters
  // a lone event; anything else is the event's fault (an attempt charged).
  test("@platformatic/kafka: an outage or a moved leader is retriable, a refused size is too large, a bad record neither", () => {
    const response = (code: number) => new ResponseError(0, 9, { "/topics/0/partitions/3": [code, "refused"] }, {});
    const cases: [string, Error, boolean, boolean][] = [
      ["connection lost", new NetworkError("Connection closed"), true, false],
      // Its timeouts say canRetry false; for the relay a request that timed out is an outage.
      ["request timed out", new TimeoutError("Request timed out"), true, false],
      ["leader moved", response(6), true, false],
      ["message too large", response(10), false, true],
      ["record list too large", response(18), false, true],
      ["invalid record", response(87), false, false],
      ["authorization failed", new ProtocolError("TOPIC_AUTHORIZATION_FAILED"), false, false],
      // Its metadata's answer for a topic it does not know (yet): kafkajs retries that.
      ["unknown topic", new UserError("Unknown topic omp-package-events."), true, false],
      ["another misuse", new UserError("Invalid option"), false, false],
      // Our adapter's own, before a send its cached metadata would crash on (produce-client.ts).
      [
        "partition without a leader",
        new PartitionNotReadyError("events", 3, "no leader the client knows (leader -1)"),
        true,
        false,
      ],
    ];
    // As its producer rejects: the send's aggregate, around the retries' aggregate of every attempt.
    const afterAttempts = (...attempts: Error[]) =>
      new MultipleErrors("Producing messages failed.", [
        new MultipleErrors(`produce failed ${attempts.length} times.`, attempts),
      ]);
    for (const [what, err, retriable, tooLarge] of cases) {
      assert.equal(isRetriable(err), retriable, `${what}: retriable`);
      assert.equal(isTooLarge(err), tooLarge, `${what}: too large`);
      const wrapped = afterAttempts(err);
      assert.equal(isRetriable(wrapped), retriable, `${what}, as the producer rejects: retriable`);
      assert.equal(isTooLarge(wrapped), tooLarge, `${what}, as the producer rejects: too large`);
    }
    // The last attempt is what counts: an outage that ends in a refused size is the size's fault.
    const outageThenTooLarge = afterAttempts(new NetworkError("Connection closed"), response(10));
    assert.equal(isRetriable(outageThenTooLarge), false);
    assert.equal(isTooLarge(outageThenTooLarge), true);
    const tooLargeThenOutage = afterAttempts(response(10), new TimeoutError("Request timed out"));
    assert.equal(isRetriable(tooLargeThenOutage), true);
  });
});

// kafkajs spreads its error classes into its exports, which Node's named CommonJS imports miss.
const { KafkaJSNonRetriableError, KafkaJSProtocolError } = kafkajs;

describe("a produce failure of kafkajs' idempotent producer", () => {
  // Its producer's numbering, not the event, is at fault: the next send goes through a new
  // producer (produce-client.ts), so such a failure backs off and charges no attempt.
  test("a refused sequence or producer id is retriable; a refused record is not", () => {
    const protocolError = (type: string, code: number) =>
      new KafkaJSProtocolError({ message: type, type, code, retriable: false } as unknown as Error);
    const cases: [Error, boolean][] = [
      [protocolError("OUT_OF_ORDER_SEQUENCE_NUMBER", 45), true],
      [protocolError("UNKNOWN_PRODUCER_ID", 59), true],
      [protocolError("INVALID_PRODUCER_EPOCH", 47), true],
      [protocolError("CORRUPT_MESSAGE", 2), false],
      [protocolError("INVALID_RECORD", 87), false],
    ];
    for (const [err, retriable] of cases) {
      assert.equal(isRetriable(err), retriable, err.message);
      // As kafkajs' retrier hands it on: its types leave out the cause it takes.
      const NonRetriable = KafkaJSNonRetriableError as unknown as new (e: Error, m: { cause: Error }) => Error;
      const wrapped = new NonRetriable(err, { cause: err });
      assert.equal(isRetriable(wrapped), retriable, `${err.message}, wrapped`);
    }
  });
});

describe("Kafka message of an event", () => {
  test("key and headers name the package and the event; the value is the PackageEvent", () => {
    const message = toEventMessage({ ...event(7n, 42n), type: "Updated", reason: "republish" });
    assert.equal(message.key, "42");
    assert.deepEqual(message.headers, {
      "event-id": "7",
      "event-type": "Updated",
      "package-id": "42",
      "content-type": "application/x-protobuf",
      "event-reason": "republish",
    });
    const decoded = fromBinary(PackageEventSchema, message.value);
    assert.equal(decoded.ID, 7n);
    assert.equal(decoded.PackageID, 42n);
    assert.equal(decoded.Type, EventType.Updated);
    assert.equal(timestampDate(decoded.Created!).toISOString(), "2026-11-30T10:00:00.123Z");
    assert.equal(Buffer.from(decoded.Payload).toString("utf8"), '{"id":"42"}');
  });

  test("the stored trace goes out as headers only when there is one", () => {
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const traced = toEventMessage({ ...event(1n, 1n), traceparent, tracestate: "vendor=1" });
    assert.equal(traced.headers.traceparent, traceparent);
    assert.equal(traced.headers.tracestate, "vendor=1");
    const plain = toEventMessage(event(1n, 1n));
    assert.equal(
      "traceparent" in plain.headers || "tracestate" in plain.headers || "event-reason" in plain.headers,
      false,
    );
  });
});

describe("acknowledger", () => {
  function acknowledger(outbox: MemoryOutbox, batchSize = 100, flushIntervalMs = 0) {
    const progress: { deleted: number; released: boolean }[] = [];
    const counts = { deadLettered: 0, retried: 0 };
    const ack = new Acknowledger(
      outbox,
      { owner: "relay-1", batchSize, flushIntervalMs, maxAttempts: 3, backoff: { minMs: 1000, maxMs: 5000 } },
      {
        onProgress: (deleted, released) => progress.push({ deleted: deleted.length, released }),
        onDeadLettered: (n) => {
          counts.deadLettered += n;
        },
        onRetryScheduled: (n) => {
          counts.retried += n;
        },
      },
      captureLogs("warn").logger,
    );
    return { ack, progress, counts };
  }

  async function claimAll(outbox: MemoryOutbox): Promise<OutboxEvent[]> {
    return (await outbox.claimHeads({ owner: "relay-1", limit: 1000, leaseSeconds: 30 })).events;
  }

  test("published events are deleted in sets of at most batchSize", async () => {
    const outbox = new MemoryOutbox();
    for (let p = 1n; p <= 250n; p++) outbox.write(p);
    const { ack, progress } = acknowledger(outbox, 100);
    ack.add({ published: await claimAll(outbox), failed: [], unsent: [] });
    while (ack.pending > 0) assert.ok(await ack.flush());
    assert.deepEqual(
      progress.map((p) => p.deleted),
      [100, 100, 50],
    );
    assert.equal(outbox.rows.size, 0);
  });

  test("an idle acknowledger lingers flushIntervalMs after the first outcome, however many adds it comes in", async (t) => {
    const outbox = new MemoryOutbox();
    for (let p = 1n; p <= 3n; p++) outbox.write(p);
    const [a, b, c] = await claimAll(outbox);
    const { ack, progress } = acknowledger(outbox, 100, 1000);
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const stopping = new AbortController();
    const running = ack.run(stopping.signal, () => Number.POSITIVE_INFINITY);
    const turns = async (n = 5) => {
      for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
    };
    try {
      // One send's outcome, added per partition in the same tick (as the in-flight pool does).
      ack.add({ published: [a!], failed: [], unsent: [] });
      ack.add({ published: [b!], failed: [], unsent: [] });
      await turns();
      assert.equal(outbox.rows.size, 3, "nothing deleted before the linger ends");
      ack.add({ published: [c!], failed: [], unsent: [] });
      t.mock.timers.tick(999);
      await turns();
      assert.equal(outbox.rows.size, 3, "nothing deleted before the linger ends");
      t.mock.timers.tick(1);
      // (poll() waits with setTimeout, which is mocked here.)
      for (let i = 0; i < 100 && outbox.rows.size > 0; i++) await turns(1);
      assert.equal(outbox.rows.size, 0);
      assert.deepEqual(progress, [{ deleted: 3, released: false }], "one delete for the three");
    } finally {
      stopping.abort();
      await running;
    }
  });

  test("an outcome with a failure in it ends the linger at once, even in the same tick as the first", async (t) => {
    const outbox = new MemoryOutbox();
    for (let p = 1n; p <= 2n; p++) outbox.write(p);
    const [a, b] = await claimAll(outbox);
    const { ack, progress } = acknowledger(outbox, 100, 1000);
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const stopping = new AbortController();
    const running = ack.run(stopping.signal, () => Number.POSITIVE_INFINITY);
    try {
      ack.add({ published: [a!], failed: [], unsent: [] });
      ack.add({ published: [], failed: [{ event: b!, error: "REQUEST_TIMED_OUT", retriable: true }], unsent: [] });
      // No timer is advanced: only a flush that skips the linger can write these.
      for (let i = 0; i < 100 && progress.length === 0; i++) await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(progress, [{ deleted: 1, released: true }]);
      assert.equal(outbox.rows.get(b!.id)!.lockedBy, null, "the failed event is given back");
    } finally {
      stopping.abort();
      await running;
    }
  });

  test("one flush writes each kind of outcome: dead letters, retries with backoff, give-backs", async () => {
    const outbox = new MemoryOutbox();
    const [bad, flaky, waiting] = [outbox.write(1n, 1, 2)[0]!, outbox.write(2n)[0]!, outbox.write(3n)[0]!];
    const claimed = new Map((await claimAll(outbox)).map((e) => [e.id, e]));
    const { ack, progress, counts } = acknowledger(outbox);
    ack.add({
      published: [],
      failed: [
        { event: claimed.get(bad)!, error: "INVALID_RECORD", retriable: false },
        { event: claimed.get(flaky)!, error: "REQUEST_TIMED_OUT", retriable: true },
      ],
      unsent: [claimed.get(waiting)!],
    });
    assert.ok(await ack.flush());
    assert.deepEqual(counts, { deadLettered: 1, retried: 1 });
    assert.deepEqual(progress, [{ deleted: 0, released: true }]);
    assert.equal(outbox.deadLetters.get(bad)!.lastError, "INVALID_RECORD");
    const retried = outbox.rows.get(flaky)!;
    assert.deepEqual([retried.lockedBy, retried.event.attempts, retried.lastError], [null, 0, "REQUEST_TIMED_OUT"]);
    assert.ok(retried.availableAt > Date.now(), "retried after a backoff");
    const given = outbox.rows.get(waiting)!;
    assert.deepEqual([given.lockedBy, given.event.attempts, given.availableAt], [null, 0, 0]);
  });

  test("at stop it gives back every claim whose outcome it has not written, under that claim's lease only", async () => {
    const outbox = new MemoryOutbox();
    outbox.write(1n);
    outbox.write(2n);
    const { ack } = acknowledger(outbox);
    const [first, second] = await claimAll(outbox);
    ack.hold([first!, second!]);
    // The first claim of event 1 is given back (unsent) and event 1 is claimed again, as the
    // relay does when a lane was full; the second claim's outcome is never written.
    ack.add({ published: [], failed: [], unsent: [first!] });
    assert.ok(await ack.flush());
    const [again] = await claimAll(outbox);
    assert.equal(again!.id, first!.id);
    assert.notEqual(again!.lease, first!.lease);
    ack.hold([again!]);
    // A late outcome of the first claim arrives: it must not make the acknowledger forget the newer one.
    ack.add({ published: [], failed: [], unsent: [first!] });
    assert.ok(await ack.flush());
    assert.equal(outbox.leased.length, 2);
    assert.equal(await ack.releaseHeld(), 2, "event 1 under its newer lease, and event 2");
    assert.equal(outbox.leased.length, 0);
  });

  test("a database error keeps every outcome queued for the next flush", async () => {
    const outbox = new MemoryOutbox();
    outbox.write(1n, 2);
    const events = await claimAll(outbox);
    const { ack } = acknowledger(outbox);
    ack.add({ published: events, failed: [], unsent: [] });
    outbox.failNext("deleteEvents");
    assert.equal(await ack.flush(), false);
    assert.equal(ack.pending, 2);
    assert.equal(outbox.rows.size, 2);
    assert.equal(await ack.flush(), true);
    assert.equal(ack.pending, 0);
    assert.equal(outbox.rows.size, 0);
  });
});

describe("in-flight pool", () => {
  test("a partition holds at most 2 × batchSize events; beyond, its packages wait unclaimed", async () => {
    const outbox = new MemoryOutbox();
    const sender = new FakeSender(2);
    for (let p = 1n; p <= 40n; p++) outbox.write(p, 2);
    let open!: () => void;
    const opened = new Promise<void>((r) => {
      open = r;
    });
    sender.delay = (partition) => (partition === 0 ? opened : Promise.resolve());
    const relay = startTestRelay(outbox, sender, { batchSize: 4, maxInFlightBatches: 8 });
    try {
      await poll(
        "partition 1 drained while partition 0 hangs",
        () => [...outbox.rows.values()].every((r) => sender.partitionOf(r.event.packageId) === 0),
        (x) => x,
        5000,
        5,
      );
      // Partition 1 is done: what the pool holds is partition 0's (given-back events leave it at once).
      const held = await relay.value("processing");
      assert.ok(held > 0 && held <= 8, `held on partition 0: ${held}`);
      assert.ok(
        [...outbox.skippedPackages].some((p) => sender.partitionOf(p) === 0),
        "the full partition's packages were passed over",
      );
      open();
      await poll(
        "an empty outbox",
        () => outbox.rows.size,
        (n) => n === 0,
        5000,
        5,
      );
      assert.ok(sender.requests.every((r) => r.ids.length <= 8));
    } finally {
      await relay.running.stop();
    }
  });
});

describe("maintenance", () => {
  test("refreshes the outbox gauges, says which are estimates, and outlives a database error", async () => {
    const outbox = new MemoryOutbox();
    outbox.backlogExactUpTo = 1;
    outbox.write(1n, 2);
    const [dead] = outbox.write(2n);
    await outbox.claimHeads({ owner: "relay-0", limit: 10, leaseSeconds: 30 });
    await outbox.deadLetterEvents("relay-0", [
      { id: dead!, lease: outbox.rows.get(dead!)!.event.lease, error: "e", retriable: false },
    ]);
    outbox.failNext("readBacklog");
    const metrics = new RetranslatorMetrics(new Registry());
    const logs = captureLogs("warn");
    const stop = new AbortController();
    const loop = runMaintenance(outbox, 5, metrics, logs.logger, stop.signal);
    try {
      const gauge = async (g: "backlog" | "deadLetters") => (await metrics[g].get()).values[0]?.value;
      await poll(
        "the backlog gauge",
        () => gauge("backlog"),
        (v) => v === 2,
        5000,
        5,
      );
      assert.equal(await gauge("deadLetters"), 1);
      const estimated = Object.fromEntries(
        (await metrics.countsEstimated.get()).values.map((v) => [v.labels.table, v.value]),
      );
      assert.deepEqual(estimated, { outbox: 1, dead_letters: 0 }, "2 events above a cap of 1; 1 dead letter not");
      assert.ok(metrics.oldestAgeSeconds >= 0);
      const messages = logs.lines.map((l) => l.msg);
      assert.ok(messages.includes("outbox maintenance failed; retrying next interval"));
    } finally {
      stop.abort();
      await loop;
    }
  });
});
