import type { Consumer, ConsumerConfig, ConsumerRunConfig, ConsumerSubscribeTopics, Kafka } from "kafkajs";
import { jitteredBackoffMs, sleep } from "../lifecycle/abortable.js";
import { settleWithin } from "../lifecycle/deadline.js";
import type { Logger } from "../logger/logger.js";
import { roundRobinAssigningEveryMember } from "./group-assigner.js";

export interface RestartingConsumerOptions {
  /** What the log lines call it: `<name> failed; restarting it after a backoff`. */
  name: string;
  /** The group and its timeouts; the retry policy and the assigner are the loop's. */
  consumer: Omit<ConsumerConfig, "retry" | "partitionAssigners">;
  subscription: ConsumerSubscribeTopics;
  run: ConsumerRunConfig;
  /** The n-th restart in a row waits jitteredBackoffMs(n, min, max) (lifecycle/abortable.ts). */
  restartBackoffMinMs: number;
  restartBackoffMaxMs: number;
  /**
   * Bound on each disconnect: kafkajs waits for the batch in hand and for its
   * requests in flight, a join the coordinator holds (up to the rebalance
   * timeout + 5 s) included. Past it the loop goes on without it.
   */
  disconnectTimeoutMs: number;
  /** The config key disconnectTimeoutMs comes from, if any: the stop-timeout warning names it. */
  disconnectTimeoutKey?: string;
  /**
   * A failure kafkajs does not call retriable ends the loop (`failure` is set)
   * instead of restarting: for a consumer whose owner must fail /live then.
   */
  stopOnNonRetriable: boolean;
}

export interface ConsumerGroupHooks {
  /** The group assigned this member its partitions (after every rebalance). */
  onAssignment?(assigned: Readonly<Record<string, readonly number[]>>): void;
  /** The member stopped consuming its partitions (a rebalance, a failure, a stop). */
  onUnassigned?(reason: string): void;
  /** The consumer failed and will be started again after `delayMs`. */
  onRestart?(error: Error, delayMs: number): void;
}

/**
 * For a consumer with no config keys of its own (the facade's message log, the
 * bot's cache): the facade's defaults for its read model, for the same reasons
 * (a killed member's partitions move on after 10 s; the request timeout stays
 * 5 s above the session timeout, so no group request times out while the
 * coordinator waits for a dead member), and restarts within seconds.
 */
export const sideConsumerSettings = {
  requestTimeoutMs: 15_000,
  group: { sessionTimeout: 10_000, heartbeatInterval: 1000, rebalanceTimeout: 30_000 },
  restartBackoffMinMs: 100,
  restartBackoffMaxMs: 5000,
} as const;

interface Outcome {
  error: Error;
  retriable: boolean;
}

/** One kafkajs consumer from its start to its end: stopped, or crashed with an error. */
interface Run {
  consumer: Consumer;
  ended: Promise<Outcome>;
  /** Ends the run (the first call counts): kafkajs' crash, or a failed connect or subscribe. */
  end(outcome: Outcome): void;
  joined: boolean;
}

/**
 * The one restart loop of every Kafka consumer group member (the facade's read
 * model, its message log, the bot's cache). kafkajs owns the fetch loop and its
 * quick retries; this loop owns the restarts. When kafkajs gives up (its own
 * restart would come 300 ms later, as a new member, again and again while the
 * group waits for the previous one's session to end), the consumer is
 * disconnected and a new one started after jitteredBackoffMs; the count of
 * failures in a row starts over once a consumer has joined its group.
 */
export class RestartingConsumer {
  private crash: Error | undefined;

  constructor(
    private readonly kafka: Kafka,
    private readonly options: RestartingConsumerOptions,
    private readonly hooks: ConsumerGroupHooks,
    private readonly logger: Logger,
  ) {}

  /** Set when the loop ended on a non-retriable failure (with stopOnNonRetriable). */
  get failure(): Error | undefined {
    return this.crash;
  }

  /**
   * Runs consumers until `signal` aborts, then disconnects the last one
   * (within disconnectTimeoutMs). The start is not awaited as such: joining can
   * take a session timeout or more (a killed predecessor's session must end
   * first), and a stop must not wait for it. One owner awaits the promise.
   */
  async run(signal: AbortSignal): Promise<void> {
    const name = this.options.name;
    let failures = 0;
    while (!signal.aborted) {
      const run = this.newRun(signal);
      void this.begin(run, signal).catch((err: unknown) =>
        run.end({ error: err as Error, retriable: isRetriable(err) }),
      );
      const outcome = await untilSettledOrAborted(run.ended, signal);
      if (outcome === undefined) {
        this.hooks.onUnassigned?.("stopping");
        await this.disconnect(run.consumer);
        return;
      }
      this.hooks.onUnassigned?.(`${name} failed: ${outcome.error.message}`);
      // After a crash kafkajs has disconnected already; again is harmless, and needed after a throw.
      await this.disconnect(run.consumer);
      if (!outcome.retriable && this.options.stopOnNonRetriable) {
        this.crash = outcome.error;
        this.logger.fatal({ err: outcome.error }, `${name} failed with a non-retriable error and will not restart`);
        return;
      }
      failures = run.joined ? 1 : failures + 1;
      const delayMs = jitteredBackoffMs(failures, this.options.restartBackoffMinMs, this.options.restartBackoffMaxMs);
      this.hooks.onRestart?.(outcome.error, delayMs);
      this.logger.warn(
        { err: outcome.error, failuresInARow: failures, restartInMs: delayMs },
        `${name} failed; restarting it after a backoff`,
      );
      await sleep(delayMs, signal);
    }
  }

  /**
   * Connects, subscribes and runs; a failure of the first join ends `run.ended`
   * through kafkajs' crash. A step that completes after a stop (a connect that
   * was retrying) goes no further: nobody would own the consumer it started.
   */
  private async begin(run: Run, signal: AbortSignal): Promise<void> {
    const stopped = async () => {
      if (signal.aborted) await run.consumer.disconnect();
      return signal.aborted;
    };
    await run.consumer.connect();
    if (await stopped()) return;
    await run.consumer.subscribe(this.options.subscription);
    if (await stopped()) return;
    await run.consumer.run(this.options.run);
  }

  private newRun(signal: AbortSignal): Run {
    let retriable = false;
    let end!: (outcome: Outcome) => void;
    const ended = new Promise<Outcome>((resolve) => (end = resolve));
    const consumer = this.kafka.consumer({
      ...this.options.consumer,
      partitionAssigners: [roundRobinAssigningEveryMember],
      retry: {
        // kafkajs asks this only for retriable errors; the restart is ours (run).
        restartOnFailure: async () => {
          retriable = !signal.aborted;
          return false;
        },
      },
    });
    const run: Run = { consumer, ended, end, joined: false };
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      run.joined = true;
      this.logger.info(
        { groupId: payload.groupId, assigned: payload.memberAssignment, durationMs: payload.duration },
        "joined the consumer group",
      );
      this.hooks.onAssignment?.(payload.memberAssignment);
    });
    consumer.on(consumer.events.REBALANCING, () => this.hooks.onUnassigned?.("the group is rebalancing"));
    // Emitted after kafkajs disconnected and asked restartOnFailure.
    consumer.on(consumer.events.CRASH, ({ payload }) => end({ error: payload.error, retriable }));
    return run;
  }

  private async disconnect(consumer: Consumer): Promise<void> {
    const { name, disconnectTimeoutMs, disconnectTimeoutKey } = this.options;
    const left = await settleWithin(
      consumer.disconnect().catch((err: unknown) => this.logger.warn({ err }, `${name} disconnect failed`)),
      disconnectTimeoutMs,
    );
    if (!left) {
      this.logger.warn(
        { disconnectTimeoutMs },
        `${name} still busy (a batch, or a join the coordinator holds) after ${disconnectTimeoutKey ?? `${disconnectTimeoutMs} ms`}; going on without it`,
      );
    }
  }
}

/** As kafkajs decides whether to restart: its retries ran out, or the root cause says retriable. */
function isRetriable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.name === "KafkaJSNumberOfRetriesExceeded") return true;
  let cause: unknown = err;
  while ((cause as { cause?: unknown }).cause instanceof Error) cause = (cause as { cause: unknown }).cause;
  return (cause as { retriable?: unknown }).retriable === true;
}

/** `ended`'s value, or undefined as soon as `signal` aborts (the listener goes once either happens). */
function untilSettledOrAborted<T>(ended: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    void ended.then((value) => {
      signal.removeEventListener("abort", onAbort);
      resolve(value);
    });
  });
}
