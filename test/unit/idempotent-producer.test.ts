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
  renewingIdempotentClient,
} from "../../internal/retranslator/sender/idempotent-producer.js";

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
  readonly sends: Deferred[] = [];
  disconnects = 0;
  constructor(
    readonly id: number,
    connectAtOnce: boolean,
    /** Every send of every producer of the client, in the order they were made. */
    private readonly allSends: Deferred[],
  ) {
    if (connectAtOnce) this.connection.resolve();
  }
  connect(): Promise<void> {
    return this.connection.promise;
  }
  send(): Promise<unknown> {
    if (this.disconnects > 0) return Promise.reject(new Error(`sent on producer ${this.id} after its disconnect`));
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
const message: EventMessage = { key: "1", value: Buffer.from("v"), headers: {}, partition: 0 } as EventMessage;
/** Lets every pending promise callback run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

function fakeClient({ connectAtOnce = true } = {}) {
  const made: FakeProducer[] = [];
  const allSends: Deferred[] = [];
  const warnings: string[] = [];
  const client = renewingIdempotentClient(
    () => {
      const producer = new FakeProducer(made.length + 1, connectAtOnce, allSends);
      made.push(producer);
      return producer;
    },
    (msg) => warnings.push(msg),
  );
  const produce = () => client.produce("events", [message], 1000);
  return { client, made, allSends, warnings, produce };
}

describe("the idempotent client's producer renewal", () => {
  test("a retriable failure replaces the producer: the next send goes through a new one; the old one is disconnected once its other send ends", async () => {
    const { client, made, produce } = fakeClient();
    const first = produce();
    const second = produce();
    await settle();
    assert.equal(made.length, 1);
    assert.equal(made[0]!.sends.length, 2);

    made[0]!.sends[1]!.reject(timedOut());
    await assert.rejects(second, /timed out/);
    assert.equal(made.length, 2, "a new producer is made at once, while the partition backs off");
    assert.equal(made[0]!.disconnects, 0, "not while its other send is in flight");

    await client.ready();
    const third = produce();
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
    const { made, produce } = fakeClient();
    const sent = produce();
    await settle();
    made[0]!.sends[0]!.reject(refusedRecord());
    await assert.rejects(sent, /invalid record/);
    const next = produce();
    await settle();
    assert.equal(made.length, 1);
    assert.equal(made[0]!.sends.length, 2);
    made[0]!.sends[1]!.resolve();
    await next;
  });

  test("a producer that cannot connect is dropped: ready() rejects with its error and the next call makes another", async () => {
    const { client, made } = fakeClient({ connectAtOnce: false });
    const ready = client.ready();
    await settle();
    made[0]!.connection.reject(Object.assign(new Error("Connection refused"), { name: "KafkaJSConnectionError" }));
    await assert.rejects(ready, /Connection refused/);
    await settle();
    assert.equal(made[0]!.disconnects, 1);
    const again = client.ready();
    await settle();
    assert.equal(made.length, 2);
    made[1]!.connection.resolve();
    await again;
  });

  test("close() disconnects every producer, the replaced ones with sends in flight too, and refuses later sends", async () => {
    const { client, made, produce } = fakeClient();
    const first = produce().catch((err: unknown) => err);
    const failing = produce();
    await settle();
    made[0]!.sends[1]!.reject(timedOut());
    await assert.rejects(failing);
    await client.ready();
    await client.close();
    assert.deepEqual(
      made.map((p) => p.disconnects),
      [1, 1],
    );
    await assert.rejects(produce(), ProducerClosedError);
    made[0]!.sends[0]!.resolve();
    await first;
    await settle();
    assert.deepEqual(
      made.map((p) => p.disconnects),
      [1, 1],
      "each disconnected once",
    );
  });

  test("any interleaving of sends, successes and failures: no send goes through a producer after its disconnect, every producer is disconnected once, and only retriable failures make new producers", async () => {
    type Outcome = "ok" | "retriable" | "refused";
    // A start may settle an earlier send in the same tick: the send just started is then
    // between its producer's connect and its request when that producer may be replaced.
    type Step = { start: Outcome; alsoSettleNth: number | null } | { settleNth: number };
    const step: fc.Arbitrary<Step> = fc.oneof(
      fc.record({
        start: fc.constantFrom("ok" as const, "retriable" as const, "refused" as const),
        alsoSettleNth: fc.option(fc.nat(20)),
      }),
      fc.record({ settleNth: fc.nat(20) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 30 }), async (steps) => {
        const { client, made, allSends, produce } = fakeClient();
        const pending: { outcome: Outcome; send: Deferred }[] = [];
        const results: Promise<unknown>[] = [];
        let retriableFailures = 0;
        const settleOne = (nth: number) => {
          const [{ outcome, send }] = pending.splice(nth % pending.length, 1) as [(typeof pending)[number]];
          if (outcome === "ok") send.resolve();
          else if (outcome === "retriable") {
            retriableFailures += 1;
            send.reject(timedOut());
          } else send.reject(refusedRecord());
        };
        for (const s of steps) {
          if ("start" in s) {
            const before = allSends.length;
            results.push(produce().catch((err: unknown) => err));
            if (s.alsoSettleNth !== null && pending.length > 0) settleOne(s.alsoSettleNth);
            await settle();
            assert.equal(allSends.length, before + 1, "the send reached a producer");
            pending.push({ outcome: s.start, send: allSends.at(-1)! });
          } else if (pending.length > 0) {
            settleOne(s.settleNth);
            await settle();
          }
        }
        for (const { send } of pending) send.resolve();
        for (const result of await Promise.all(results))
          assert.ok(!(result instanceof Error && /after its disconnect/.test(result.message)), String(result));
        await client.close();
        await settle();
        assert.ok(
          made.every((p) => p.disconnects === 1),
          `disconnects: ${made.map((p) => p.disconnects)}`,
        );
        assert.ok(made.length <= 1 + retriableFailures, `${made.length} producers, ${retriableFailures} failures`);
        if (retriableFailures === 0) assert.ok(made.length <= 1, "no retriable failure, no second producer");
      }),
      { numRuns: 200 },
    );
  });
});
