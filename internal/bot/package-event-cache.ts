import { fromJson } from "@bufbuild/protobuf";
import { type Consumer, Kafka, logLevel } from "kafkajs";
import { type Package, PackageSchema } from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import { DecodeError, decodePackageEvent, type PackageChange } from "../facade/decode.js";
import { kafkaLogCreator } from "../kafka/log.js";
import type { KafkaClientSecurity } from "../kafka/security.js";
import { failureBackoffMs, sleep } from "../lifecycle/abortable.js";
import type { Logger } from "../logger/logger.js";
import type { CacheEventSink, RedisHealth } from "./cached-package-api.js";
import type { BotMetrics } from "./metrics.js";
import type { PackageCache } from "./package-cache.js";

export interface PackageEventCacheOptions {
  brokers: readonly string[];
  clientId: string;
  topic: string;
  groupId: string;
  security: KafkaClientSecurity;
}

// Group timeouts as the facade's defaults, for the same reason: a killed bot's
// partitions move on after 10 s, and no group request times out while the
// coordinator waits for a dead member.
const sessionTimeoutMs = 10_000;
const heartbeatIntervalMs = 1000;
const rebalanceTimeoutMs = 30_000;
const requestTimeoutMs = 15_000;
// The bot's whole stop is meant to take seconds, not a session timeout.
const shutdownTimeoutMs = 5000;

/** The package as the event's payload describes it, in the API's shape. */
export function packageOf(change: PackageChange): Package {
  const s = change.state;
  return fromJson(PackageSchema, {
    ID: s.id.toString(),
    Title: s.title,
    Material: s.material,
    MaximumVolume: s.maximumVolume,
    Reusable: s.reusable,
    Created: s.created,
    ...(s.updated !== null && { Updated: { Time: s.updated } }),
  });
}

/**
 * Keeps the bot's cache coherent with every client's changes: consumes the package
 * events (kafka.topic) in a group of its own and applies each to Redis, where only
 * an event newer than the newest seen for its package changes the entry. Offsets
 * are committed after the event is applied; while Redis is down the partition waits
 * (heartbeating), so no event is skipped.
 */
export class PackageEventCache {
  private readonly kafka: Kafka;

  constructor(
    private readonly options: PackageEventCacheOptions,
    private readonly cache: PackageCache,
    private readonly health: RedisHealth,
    private readonly metrics: BotMetrics,
    private readonly emit: CacheEventSink,
    private readonly logger: Logger,
  ) {
    this.kafka = new Kafka({
      ...options.security,
      clientId: `${options.clientId}-bot`,
      brokers: [...options.brokers],
      requestTimeout: requestTimeoutMs,
      logLevel: logLevel.WARN,
      logCreator: kafkaLogCreator(this.logger),
    });
  }

  /**
   * Consumes until `signal` aborts; the owner awaits the promise after aborting. A
   * consumer that cannot start (no broker yet) or that kafkajs gives up on is
   * replaced after a backoff, so the cache catches up once the broker is back.
   */
  async run(signal: AbortSignal): Promise<void> {
    for (let failures = 0; !signal.aborted; ) {
      const consumer = this.kafka.consumer({
        groupId: this.options.groupId,
        sessionTimeout: sessionTimeoutMs,
        heartbeatInterval: heartbeatIntervalMs,
        rebalanceTimeout: rebalanceTimeoutMs,
        // How long an idle fetch waits for data: a broker answers as soon as an event
        // arrives, but some (the test broker) wait this long, and the cache is stale meanwhile.
        maxWaitTimeInMs: 250,
        // Our loop replaces a consumer kafkajs gave up on (below).
        retry: { restartOnFailure: async () => false },
      });
      let crashed: (err: Error) => void = () => {};
      const crash = new Promise<Error>((resolve) => (crashed = resolve));
      consumer.on(consumer.events.CRASH, (e) => crashed(e.payload.error));
      try {
        await this.consume(consumer, signal);
        failures = 0;
        const aborted = new Promise<undefined>((resolve) => {
          if (signal.aborted) return resolve(undefined);
          signal.addEventListener("abort", () => resolve(undefined), { once: true });
        });
        const err = await Promise.race([aborted, crash]);
        if (err !== undefined) throw err;
      } catch (err) {
        if (!signal.aborted) {
          const delayMs = failureBackoffMs(++failures);
          this.logger.warn(
            { err: { name: (err as Error).name, message: (err as Error).message }, restartInMs: delayMs },
            "package event consumer for the cache failed; starting a new one after a backoff",
          );
          await boundedDisconnect(consumer, shutdownTimeoutMs);
          await sleep(delayMs, signal);
          continue;
        }
      }
      // Lets the message in hand finish, commits, leaves the group.
      // Leaving the group can wait on the coordinator (a join it holds): bounded.
      const left = await boundedDisconnect(consumer, shutdownTimeoutMs);
      if (!left) this.logger.warn("consumer still leaving its group at shutdown; closing anyway");
    }
  }

  private async consume(consumer: Consumer, signal: AbortSignal): Promise<void> {
    await consumer.connect();
    // A new group starts at the end: what was cached before is bounded by its TTL.
    await consumer.subscribe({ topics: [this.options.topic], fromBeginning: false });
    await consumer.run({
      eachMessage: async ({ message, partition, heartbeat }) => {
        let change: PackageChange;
        try {
          change = decodePackageEvent(message.value);
        } catch (err) {
          if (!(err instanceof DecodeError)) throw err;
          this.metrics.packageEvents.inc({ outcome: "invalid" });
          this.logger.warn(
            { partition, offset: message.offset, reason: err.message },
            "package event not usable for the cache; skipped",
          );
          return;
        }
        const pkg = change.type === "Removed" ? undefined : packageOf(change);
        for (let failures = 0; ; ) {
          try {
            const outcome = await this.cache.applyEvent(change.packageId, change.eventId, pkg);
            this.health.ok();
            this.metrics.packageEvents.inc({ outcome: outcome === "stale" ? "stale" : "applied" });
            if (outcome === "set") this.emit(change.packageId, "Set description", true);
            if (outcome === "removed") this.emit(change.packageId, "Remove description", true);
            this.logger.debug(
              {
                eventId: change.eventId.toString(),
                packageId: change.packageId.toString(),
                type: change.type,
                outcome,
              },
              "package event applied to the cache",
            );
            return;
          } catch (err) {
            this.health.failed("event", err);
            this.metrics.packageEvents.inc({ outcome: "error" });
            // Not committed: stopping here redelivers the event to the next member.
            if (signal.aborted) throw new Error("stopping before the event reached the cache", { cause: err });
            await sleep(failureBackoffMs(++failures), signal);
            await heartbeat();
          }
        }
      },
    });
  }
}

/** consumer.disconnect() or, after `ms`, false (kafkajs waits for requests in flight, a held join included). */
async function boundedDisconnect(consumer: Consumer, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([
      consumer.disconnect().then(
        () => true,
        () => true,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
