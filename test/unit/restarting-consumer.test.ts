// The restart loop of every Kafka consumer group member (internal/kafka/restarting-consumer.ts)
// against a fake kafkajs client: what a crash, a failed connect, a non-retriable error and a stop
// do, without a broker.

import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import type { ConsumerConfig, Kafka } from "kafkajs";
import {
  type ConsumerGroupHooks,
  RestartingConsumer,
  type RestartingConsumerOptions,
} from "../../internal/kafka/restarting-consumer.js";
import { jitteredBackoffMs } from "../../internal/lifecycle/abortable.js";
import { settleWithin } from "../../internal/lifecycle/deadline.js";
import { createLogger } from "../../internal/logger/logger.js";

const events = { GROUP_JOIN: "consumer.group_join", REBALANCING: "consumer.rebalancing", CRASH: "consumer.crash" };

/** A kafkajs consumer that does what the test tells it, and records what the loop asked of it. */
class FakeConsumer {
  readonly events = events;
  readonly calls: string[] = [];
  private readonly listeners = new Map<string, (e: { payload: Record<string, unknown> }) => void>();
  /** Awaited by connect(); the test replaces it to fail or hold a connect. */
  connecting: () => Promise<void> = async () => undefined;
  /** Awaited by disconnect(): a leave the coordinator holds. */
  leaving: () => Promise<void> = async () => undefined;

  constructor(readonly config: ConsumerConfig) {}

  on(event: string, listener: (e: { payload: Record<string, unknown> }) => void): () => void {
    this.listeners.set(event, listener);
    return () => this.listeners.delete(event);
  }
  async connect(): Promise<void> {
    this.calls.push("connect");
    await this.connecting();
  }
  async subscribe(): Promise<void> {
    this.calls.push("subscribe");
  }
  async run(): Promise<void> {
    this.calls.push("run");
  }
  async disconnect(): Promise<void> {
    this.calls.push("disconnect");
    await this.leaving();
  }

  join(): void {
    this.listeners.get(events.GROUP_JOIN)?.({ payload: { groupId: "g", memberAssignment: { t: [0] }, duration: 1 } });
  }
  /** As kafkajs: restartOnFailure is asked only for a retriable error, then CRASH is emitted. */
  async crash(error: Error, retriable: boolean): Promise<void> {
    if (retriable) await this.config.retry?.restartOnFailure?.(error);
    this.listeners.get(events.CRASH)?.({ payload: { error, groupId: "g", restart: false } });
  }
}

class FakeKafka {
  readonly consumers: FakeConsumer[] = [];
  /** Set up each new consumer before the loop uses it. */
  prepare: (consumer: FakeConsumer, index: number) => void = () => {};
  consumer(config: ConsumerConfig): FakeConsumer {
    const consumer = new FakeConsumer(config);
    this.prepare(consumer, this.consumers.length);
    this.consumers.push(consumer);
    return consumer;
  }
}

function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n")) if (line !== "") lines.push(JSON.parse(line));
      done();
    },
  });
  return { lines, logger: createLogger({ name: "test", level: "info", destination }) };
}

function start(
  overrides: Partial<RestartingConsumerOptions> = {},
  hooks: ConsumerGroupHooks = {},
  prepare?: FakeKafka["prepare"],
) {
  const kafka = new FakeKafka();
  if (prepare !== undefined) kafka.prepare = prepare;
  const { lines, logger } = capturingLogger();
  const group = new RestartingConsumer(
    kafka as unknown as Kafka,
    {
      name: "test consumer",
      consumer: { groupId: "g" },
      subscription: { topics: ["t"] },
      run: {},
      restartBackoffMinMs: 10,
      restartBackoffMaxMs: 40,
      disconnectTimeoutMs: 1000,
      stopOnNonRetriable: true,
      ...overrides,
    },
    hooks,
    logger,
  );
  const controller = new AbortController();
  const loop = group.run(controller.signal);
  return { kafka, group, lines, controller, loop };
}

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe("RestartingConsumer", () => {
  it("connects, subscribes and runs a consumer with the loop's retry policy and assigner", async () => {
    const { kafka, controller, loop } = start();
    await until("the consumer to run", () => kafka.consumers[0]?.calls.includes("run") === true);
    const config = kafka.consumers[0]!.config;
    assert.equal(config.groupId, "g");
    assert.equal(typeof config.retry?.restartOnFailure, "function");
    assert.equal(config.partitionAssigners?.length, 1);
    assert.deepEqual(kafka.consumers[0]!.calls, ["connect", "subscribe", "run"]);
    controller.abort();
    await loop;
  });

  it("a retriable crash: disconnects, waits a backoff, starts a new consumer; kafkajs does not restart it", async () => {
    const restarts: number[] = [];
    const { kafka, lines, controller, loop } = start({}, { onRestart: (_err, delayMs) => restarts.push(delayMs) });
    await until("the first consumer", () => kafka.consumers.length === 1);
    const first = kafka.consumers[0]!;
    assert.equal(await first.config.retry?.restartOnFailure?.(new Error("x")), false);
    await first.crash(new Error("broker gone"), true);
    await until("a second consumer", () => kafka.consumers.length === 2);
    assert.ok(first.calls.includes("disconnect"));
    assert.equal(restarts.length, 1);
    assert.ok(restarts[0]! >= 5 && restarts[0]! <= 10, `backoff ${restarts[0]}`);
    const line = lines.find((l) => l.msg === "test consumer failed; restarting it after a backoff");
    assert.equal(line?.restartInMs, restarts[0]);
    controller.abort();
    await loop;
  });

  it("failures in a row back off longer; a consumer that joined its group starts the count over", async () => {
    const restarts: number[] = [];
    const { kafka, controller, loop } = start(
      { restartBackoffMinMs: 8, restartBackoffMaxMs: 1000 },
      { onRestart: (_err, delayMs) => restarts.push(delayMs) },
      (consumer, index) => {
        // The first three cannot connect (retriable, as kafkajs' connection errors); the fourth joins, then crashes.
        const refused = Object.assign(new Error("connect refused"), {
          name: "KafkaJSConnectionError",
          retriable: true,
        });
        if (index < 3) consumer.connecting = async () => Promise.reject(refused);
      },
    );
    await until("a fourth consumer", () => kafka.consumers.length === 4);
    const fourth = kafka.consumers[3]!;
    await until("it to run", () => fourth.calls.includes("run"));
    fourth.join();
    await fourth.crash(new Error("coordinator moved"), true);
    await until("a fifth consumer", () => kafka.consumers.length === 5);
    controller.abort();
    await loop;
    // Ceilings 8, 16, 32 for the failures in a row (each between half and all), then 8 again.
    assert.equal(restarts.length, 4);
    for (const [i, ceiling] of [8, 16, 32, 8].entries()) {
      assert.ok(restarts[i]! >= ceiling / 2 && restarts[i]! <= ceiling, `restart ${i + 1}: ${restarts[i]} ms`);
    }
  });

  it("a non-retriable crash ends the loop with `failure` set when stopOnNonRetriable", async () => {
    const { kafka, group, lines, loop } = start();
    await until("the consumer to run", () => kafka.consumers[0]?.calls.includes("run") === true);
    const error = new Error("topic authorization failed");
    await kafka.consumers[0]!.crash(error, false);
    assert.equal(await settleWithin(loop, 10_000), true);
    assert.equal(group.failure, error);
    assert.equal(kafka.consumers.length, 1);
    assert.ok(lines.some((l) => l.msg === "test consumer failed with a non-retriable error and will not restart"));
  });

  it("a non-retriable crash restarts the consumer when not stopOnNonRetriable", async () => {
    const { kafka, group, controller, loop } = start({ stopOnNonRetriable: false });
    await until("the consumer to run", () => kafka.consumers[0]?.calls.includes("run") === true);
    await kafka.consumers[0]!.crash(new Error("unknown"), false);
    await until("a second consumer", () => kafka.consumers.length === 2);
    assert.equal(group.failure, undefined);
    controller.abort();
    await loop;
  });

  it("join and rebalance reach the hooks; a stop reports the partitions lost and leaves the group", async () => {
    const seen: string[] = [];
    const { kafka, controller, loop } = start(
      {},
      {
        onAssignment: (assigned) => seen.push(`assigned ${JSON.stringify(assigned)}`),
        onUnassigned: (reason) => seen.push(`unassigned: ${reason}`),
      },
    );
    await until("the consumer to run", () => kafka.consumers[0]?.calls.includes("run") === true);
    kafka.consumers[0]!.join();
    controller.abort();
    await loop;
    assert.deepEqual(seen, ['assigned {"t":[0]}', "unassigned: stopping"]);
    assert.deepEqual(kafka.consumers[0]!.calls, ["connect", "subscribe", "run", "disconnect"]);
  });

  it("a stop does not wait past disconnectTimeoutMs for a consumer that does not leave", async () => {
    const { kafka, lines, controller, loop } = start({ disconnectTimeoutMs: 30 }, {}, (consumer) => {
      consumer.leaving = () => new Promise(() => {});
    });
    await until("the consumer to run", () => kafka.consumers[0]?.calls.includes("run") === true);
    controller.abort();
    assert.equal(await settleWithin(loop, 10_000), true);
    assert.ok(lines.some((l) => String(l.msg).startsWith("test consumer still busy")));
  });

  it("a stop during a connect: the connect that completes later is disconnected, and no new consumer starts", async () => {
    let connected!: () => void;
    const { kafka, controller, loop } = start({}, {}, (consumer) => {
      consumer.connecting = () => new Promise<void>((resolve) => (connected = resolve));
    });
    await until("the connect", () => kafka.consumers[0]?.calls.includes("connect") === true);
    controller.abort();
    await loop;
    connected();
    await until("the late disconnect", () => kafka.consumers[0]!.calls.filter((c) => c === "disconnect").length === 2);
    assert.ok(!kafka.consumers[0]!.calls.includes("subscribe"));
    assert.equal(kafka.consumers.length, 1);
  });
});

describe("jitteredBackoffMs", () => {
  it("doubles from min to max, between half and all of the ceiling", () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map((n) => jitteredBackoffMs(n, 100, 1000, () => 1)),
      [100, 200, 400, 800, 1000, 1000],
    );
    assert.deepEqual(
      [1, 2, 3].map((n) => jitteredBackoffMs(n, 100, 1000, () => 0)),
      [50, 100, 200],
    );
  });
});
