import type { ProducerRecord } from "kafkajs";
import type { ProduceClient } from "./produce-client.js";
import { isRetriable } from "./produce-errors.js";

/** What the client needs of a kafkajs producer made with `idempotent: true`. */
export interface IdempotentProducer {
  connect(): Promise<void>;
  send(record: ProducerRecord): Promise<unknown>;
  disconnect(): Promise<void>;
}

/**
 * A send after close(): the relay has stopped. Retriable: nothing reached the
 * broker, so it must not cost the events an attempt.
 */
export class ProducerClosedError extends Error {
  override readonly name = "ProducerClosedError";
  readonly retriable = true;
  constructor() {
    super("the producer is closed");
  }
}

/**
 * A request found its producer replaced since the sender's `ready()`, and the
 * new one still connecting. It fails at once rather than wait for that connect
 * past the lease check: retriable, nothing was sent, the partition backs off.
 */
export class ProducerNotReadyError extends Error {
  override readonly name = "ProducerNotReadyError";
  readonly retriable = true;
  constructor() {
    super("the idempotent producer was replaced and its successor is still connecting");
  }
}

/** One producer (one producer id), its connection, and the sends it has in flight. */
interface Generation {
  producer: IdempotentProducer;
  connected: Promise<void>;
  isConnected: boolean;
  inFlight: number;
  /** Replaced: takes no new send, disconnected once inFlight is 0. */
  retired: boolean;
  disconnected: Promise<void> | undefined;
}

/**
 * kafkajs' idempotent producer numbers each partition's batches, and after a
 * failed send it takes the numbers back, so that its next send repeats them.
 * That is right when the broker wrote nothing, and its own retry of the same
 * batch is then recognised by the broker as a duplicate. But a send that failed
 * after the broker wrote it (an ack later than the request timeout, a
 * connection lost before the ack) leaves the broker expecting the numbers after
 * that batch: the relay's later resend of those events, grouped with others,
 * repeats the numbers with another length, and a Kafka broker refuses it, and
 * every later send of the partition, with OUT_OF_ORDER_SEQUENCE_NUMBER: the
 * partition's events would be dead-lettered one after another.
 *
 * So a failure the relay will retry (retriable: an outage, a timeout, a refused
 * sequence) replaces the producer at once: the new one (a new producer id,
 * numbered from 0) connects while the partition backs off, and `ready()`, which
 * the sender awaits before its lease check, waits for it. A request never waits
 * for a connect (ProducerNotReadyError), so no connect is inside a send's time
 * budget. The old producer is disconnected once its sends in flight are done.
 * A failure that is the record's (refused as invalid or too large) leaves the
 * numbering right and the producer in place. A resend through the new producer
 * may repeat what the broker wrote: a copy with its event-id, as without
 * idempotence (test/kafka-idempotent.test.ts).
 */
export function renewingIdempotentClient(
  makeProducer: () => IdempotentProducer,
  warn: (message: string, err: unknown) => void,
): ProduceClient {
  /** Every producer made and not yet disconnected. */
  const generations = new Set<Generation>();
  let current: Generation | undefined;
  let closed = false;

  const start = (): Generation => {
    const producer = makeProducer();
    const generation: Generation = {
      producer,
      connected: producer.connect(),
      isConnected: false,
      inFlight: 0,
      retired: false,
      disconnected: undefined,
    };
    // Whoever calls ready() next awaits `connected` and gets its error. A failed
    // connect nobody awaited yet is not kept for that call to find later: the
    // producer is dropped, and the next call starts another.
    generation.connected.then(
      () => {
        generation.isConnected = true;
      },
      () => {
        if (!generation.retired) retire(generation);
      },
    );
    generations.add(generation);
    return generation;
  };
  const disconnect = (generation: Generation): Promise<void> => {
    if (generation.disconnected !== undefined) return generation.disconnected;
    // A connected producer at once (no request may start on it after this); one still
    // connecting after its connect settles: kafkajs' connect, once past its first step,
    // would open the connections again after a disconnect made meanwhile.
    const disconnected = generation.isConnected
      ? generation.producer.disconnect()
      : generation.connected.then(
          () => generation.producer.disconnect(),
          () => generation.producer.disconnect(),
        );
    generation.disconnected = disconnected.then(
      () => {
        generations.delete(generation);
      },
      (err: unknown) => {
        generations.delete(generation);
        warn("a replaced idempotent producer failed to disconnect", err);
      },
    );
    return generation.disconnected;
  };
  const retire = (generation: Generation) => {
    generation.retired = true;
    if (current === generation) current = undefined;
    if (generation.inFlight === 0) void disconnect(generation);
  };
  /**
   * The current producer, connected and counted in flight (no renewal
   * disconnects it under a send). A request does not wait for a connect.
   */
  const acquire = async (waitForConnect: boolean): Promise<Generation> => {
    for (;;) {
      if (closed) throw new ProducerClosedError();
      current ??= start();
      const generation = current;
      if (!waitForConnect && !generation.isConnected) throw new ProducerNotReadyError();
      try {
        await generation.connected;
      } catch (err) {
        // Not connected (the cluster unreachable): the next call starts another.
        if (!generation.retired) retire(generation);
        throw err;
      }
      if (!generation.retired && !closed) {
        generation.inFlight += 1;
        return generation;
      }
      // Replaced while it connected (another send failed meanwhile): take the new one.
    }
  };
  const release = (generation: Generation) => {
    generation.inFlight -= 1;
    if (generation.retired && generation.inFlight === 0) void disconnect(generation);
  };

  return {
    connect: async () => release(await acquire(true)),
    ready: async () => release(await acquire(true)),
    produce: async (topic, messages, timeoutMs) => {
      const generation = await acquire(false);
      try {
        await generation.producer.send({ topic, acks: -1, timeout: timeoutMs, messages: [...messages] });
      } catch (err) {
        // Only the producer in use is replaced: a failure of an older one's send needs
        // nothing more, its partitions' next sends go through the new one already.
        if (isRetriable(err) && generation === current && !closed) {
          retire(generation);
          current = start();
        }
        throw err;
      } finally {
        release(generation);
      }
    },
    close: async () => {
      closed = true;
      current = undefined;
      await Promise.all([...generations].map(disconnect));
    },
  };
}
