// The idempotent client's producer renewal (internal/retranslator/sender/idempotent-producer.ts),
// on fake kafkajs producers whose connects and sends settle when the test says: which producer a
// send goes through, when a replaced one is disconnected, and that none is sent on while it
// disconnects. The broker's side (why a new producer is needed) is test/kafka-idempotent.test.ts.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import kafkajs from "kafkajs";
import type { EventMessage } from "../../internal/retranslator/sender/event-message.js";
import {
  type IdempotentProducer,
  ProducerClosedError,
  ProducerNotReadyError,
  renewingIdempotentClient,
} from "../../internal/retranslator/sender/idempotent-producer.js";
import type { ProduceClient } from "../../internal/retranslator/sender/produce-client.js";
import { isRetriable } from "../../internal/retranslator/sender/produce-errors.js";

// kafkajs spreads its error classes into its exports, which Node's named CommonJS imports miss.
const { KafkaJSProtocolError } = kafkajs;

interface Deferred {
  promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}
function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

class FakeProducer implements IdempotentProducer {
  readonly connection = deferred();
  connectState: "pending" | "up" | "failed" = "pending";
  readonly sends: Deferred[] = [];
  disconnects = 0;
  constructor(
    readonly id: number,
    /** Every send of every producer of the client, in the order they were made. */
    private readonly allSends: Deferred[],
  ) {
    this.connection.promise.then(
      () => {
        this.connectState = "up";
      },
      () => {
        this.connectState = "failed";
      },
    );
  }
  connect(): Promise<void> {
    return this.connection.promise;
  }
  send(): Promise<unknown> {
    if (this.disconnects > 0) return Promise.reject(new Error(`sent on producer ${this.id} after its disconnect`));
    if (this.connectState !== "up") return Promise.reject(new Error(`sent on producer ${this.id} before its connect`));
    const send = deferred();
    this.sends.push(send);
    this.allSends.push(send);
    return send.promise;
  }
  async disconnect(): Promise<void> {
    this.disconnects += 1;
  }
}

const timedOut = () =>
  Object.assign(new Error("Request Produce(key: 0, version: 7) timed out"), { name: "KafkaJSRequestTimeoutError" });
const refusedRecord = () =>
  new KafkaJSProtocolError({
    message: "invalid record",
    type: "INVALID_RECORD",
    code: 87,
    retriable: false,
  } as unknown as Error);
const refusedConnection = () => Object.assign(new Error("Connection refused"), { name: "KafkaJSConnectionError" });
const message: EventMessage = { key: "1", value: Buffer.from("v"), headers: {}, partition: 0 } as EventMessage;
/** Lets every pending promise callback run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

function fakeClient({ connectAtOnce = true } = {}) {
  const made: FakeProducer[] = [];
  const allSends: Deferred[] = [];
  const warnings: string[] = [];
  const client = renewingIdempotentClient(
    () => {
      const producer = new FakeProducer(made.length + 1, allSends);
      if (connectAtOnce) producer.connection.resolve();
      made.push(producer);
      return producer;
    },
    (msg) => warnings.push(msg),
  );
  // As KafkaSender sends one request: ready() before its lease check, then the request.
  const send = async () => {
    await client.ready();
    await client.produce("events", [message], 1000);
  };
  return { client, made, allSends, warnings, send };
}

/** The first producer's connect, let through once ready() is waiting on it. */
async function connectFirst(client: ProduceClient, made: FakeProducer[]): Promise<void> {
  const ready = client.ready();
  await settle();
  made[0]!.connection.resolve();
  await ready;
}

describe("the idempotent client's producer renewal", () => {
  test("a retriable failure replaces the producer: the next send goes through a new one; the old one is disconnected once its other send ends", async () => {
    const { client, made, send } = fakeClient();
    const first = send();
    const second = send();
    await settle();
    assert.equal(made.length, 1);
    assert.equal(made[0]!.sends.length, 2);

    made[0]!.sends[1]!.reject(timedOut());
    await assert.rejects(second, /timed out/);
    assert.equal(made.length, 2, "a new producer is made at once, while the partition backs off");
    await settle();
    assert.equal(made[0]!.disconnects, 0, "not while its other send is in flight");

    const third = send();
    await settle();
    assert.equal(made[1]!.sends.length, 1, "the next send goes through the new producer");

    made[0]!.sends[0]!.resolve();
    await first;
    await settle();
    assert.equal(made[0]!.disconnects, 1, "disconnected once its last send ended");
    made[1]!.sends[0]!.resolve();
    await third;
    await client.close();
    assert.deepEqual(
      made.map((p) => p.disconnects),
      [1, 1],
    );
  });

  test("a record the broker refused leaves the producer in place: its numbering is still right", async () => {
    const { made, send } = fakeClient();
    const sent = send();
    await settle();
    made[0]!.sends[0]!.reject(refusedRecord());
    await assert.rejects(sent, /invalid record/);
    const next = send();
    await settle();
    assert.equal(made.length, 1);
    assert.equal(made[0]!.sends.length, 2);
    made[0]!.sends[1]!.resolve();
    await next;
  });

  test("a request whose producer was replaced after ready() fails at once as retriable, not after the new one's connect", async () => {
    const { client, made } = fakeClient({ connectAtOnce: false });
    await connectFirst(client, made);
    const inFlight = client.produce("events", [message], 1000);
    await settle();
    await client.ready();
    // Another partition's request fails: the producer is replaced, the new one still connecting.
    made[0]!.sends[0]!.reject(timedOut());
    await assert.rejects(inFlight);
    assert.equal(made.length, 2);
    const notReady = await client.produce("events", [message], 1000).catch((err: unknown) => err);
    assert.ok(notReady instanceof ProducerNotReadyError);
    assert.equal(isRetriable(notReady), true, "the sender backs the partition off, no attempt charged");
    made[1]!.connection.resolve();
    await client.ready();
    const after = client.produce("events", [message], 1000);
    await settle();
    made[1]!.sends[0]!.resolve();
    await after;
  });

  test("a failed connect is not kept: ready() rejects with its error, and the next call makes another producer, even if the failure came while nobody waited", async () => {
    const { client, made } = fakeClient({ connectAtOnce: false });
    const ready = client.ready();
    await settle();
    made[0]!.connection.reject(refusedConnection());
    await assert.rejects(ready, /Connection refused/);
    await settle();
    assert.equal(made[0]!.disconnects, 1);
    // A replacement made after a failed send, whose connect fails before anyone calls ready().
    const again = client.ready();
    await settle();
    made[1]!.connection.resolve();
    await again;
    const failing = client.produce("events", [message], 1000);
    await settle();
    made[1]!.sends[0]!.reject(timedOut());
    await assert.rejects(failing);
    made[2]!.connection.reject(refusedConnection());
    await settle();
    const later = client.ready();
    await settle();
    assert.equal(made.length, 4, "the failed replacement is dropped, not handed to the next ready()");
    made[3]!.connection.resolve();
    await later;
  });

  test("close() disconnects every producer, replaced ones with sends in flight and one still connecting too (after its connect settles), and refuses later sends", async () => {
    const { client, made, send } = fakeClient({ connectAtOnce: false });
    await connectFirst(client, made);
    const first = send().catch((err: unknown) => err);
    const failing = send();
    await settle();
    made[0]!.sends[1]!.reject(timedOut());
    await assert.rejects(failing);
    const closing = client.close();
    await settle();
    assert.equal(made[1]!.disconnects, 0, "not while its connect runs: kafkajs would connect again after it");
    made[1]!.connection.resolve();
    await closing;
    assert.deepEqual(
      made.map((p) => p.disconnects),
      [1, 1],
    );
    const refused = await client.produce("events", [message], 1000).catch((err: unknown) => err);
    assert.ok(refused instanceof ProducerClosedError);
    assert.equal(isRetriable(refused), true, "nothing reached the broker: no attempt charged");
    made[0]!.sends[0]!.resolve();
    await first;
    await settle();
    assert.deepEqual(
      made.map((p) => p.disconnects),
      [1, 1],
      "each disconnected once",
    );
  });

  test("any interleaving of sends, connects, successes, failures and a close: no request goes through a producer before its connect or after its disconnect, each producer is disconnected once, and only failures make new producers", async () => {
    type Outcome = "ok" | "retriable" | "refused";
    type Step =
      | { start: true; alsoSettle: { nth: number; outcome: Outcome; hops: number } | null }
      | { settle: number; outcome: Outcome }
      | { connect: number; ok: boolean };
    const outcome = fc.constantFrom<Outcome>("ok", "retriable", "refused");
    const step: fc.Arbitrary<Step> = fc.oneof(
      // A start may settle an earlier request a few microtask hops later: the new one is then
      // anywhere between ready() and its request when that request's producer is replaced.
      fc.record({
        start: fc.constant(true as const),
        alsoSettle: fc.option(fc.record({ nth: fc.nat(20), outcome, hops: fc.nat(12) })),
      }),
      fc.record({ settle: fc.nat(20), outcome }),
      fc.record({ connect: fc.nat(5), ok: fc.boolean() }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 30 }), fc.boolean(), async (steps, closeEarly) => {
        const { client, made, allSends, send } = fakeClient({ connectAtOnce: false });
        const settled = new Set<Deferred>();
        const results: Promise<unknown>[] = [];
        let failures = 0;
        const settleOne = (nth: number, how: Outcome) => {
          const open = allSends.filter((d) => !settled.has(d));
          if (open.length === 0) return;
          const chosen = open[nth % open.length]!;
          settled.add(chosen);
          if (how === "ok") chosen.resolve();
          else if (how === "retriable") {
            failures += 1;
            chosen.reject(timedOut());
          } else chosen.reject(refusedRecord());
        };
        const connecting = () => made.filter((p) => p.connectState === "pending");
        for (const [i, s] of steps.entries()) {
          if (closeEarly && i === Math.floor(steps.length / 2)) results.push(client.close());
          if ("start" in s) {
            results.push(send().catch((err: unknown) => err));
            const also = s.alsoSettle;
            if (also !== null)
              void (async () => {
                for (let hop = 0; hop < also.hops; hop++) await null;
                settleOne(also.nth, also.outcome);
              })();
          } else if ("settle" in s) settleOne(s.settle, s.outcome);
          else {
            const pending = connecting();
            if (pending.length > 0) {
              const producer = pending[s.connect % pending.length]!;
              if (s.ok) producer.connection.resolve();
              else {
                failures += 1;
                producer.connection.reject(refusedConnection());
              }
            }
          }
          await settle();
        }
        // Let everything end: connects succeed, requests are acknowledged.
        for (let round = 0; round < 50 && (connecting().length > 0 || allSends.some((d) => !settled.has(d))); round++) {
          for (const producer of connecting()) producer.connection.resolve();
          settleOne(0, "ok");
          await settle();
        }
        for (const result of await Promise.all(results))
          assert.ok(
            !(result instanceof Error && /before its connect|after its disconnect/.test(result.message)),
            String(result),
          );
        await client.close();
        await settle();
        assert.ok(
          made.every((p) => p.disconnects === 1),
          `disconnects: ${made.map((p) => p.disconnects)}`,
        );
        assert.ok(made.length <= 1 + failures, `${made.length} producers, ${failures} failures`);
      }),
      { numRuns: 2000 },
    );
  });
});
