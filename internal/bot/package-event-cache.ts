import { fromJson } from "@bufbuild/protobuf";
import type { EachMessagePayload, Kafka } from "kafkajs";
import { type Package, PackageSchema } from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import { DecodeError, decodePackageEvent, type PackageChange } from "../facade/decode.js";
import { kafkaClient } from "../kafka/client.js";
import { RestartingConsumer, sideConsumerSettings } from "../kafka/restarting-consumer.js";
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
    this.kafka = kafkaClient(
      { ...options, clientId: `${options.clientId}-bot`, requestTimeoutMs: sideConsumerSettings.requestTimeoutMs },
      logger,
    );
  }

  /**
   * Consumes until `signal` aborts; the owner awaits the promise after aborting. A
   * consumer that cannot start (no broker yet) or that kafkajs gives up on is
   * replaced after a backoff, so the cache catches up once the broker is back.
   * The stop lets the event in hand finish, commits and leaves the group.
   */
  run(signal: AbortSignal): Promise<void> {
    const group = new RestartingConsumer(
      this.kafka,
      {
        name: "package event consumer for the cache",
        consumer: {
          ...sideConsumerSettings.group,
          groupId: this.options.groupId,
          // How long an idle fetch waits for data: a broker answers as soon as an event
          // arrives, but some (the test broker) wait this long, and the cache is stale meanwhile.
          maxWaitTimeInMs: 250,
        },
        // A new group starts at the end: what was cached before is bounded by its TTL.
        subscription: { topics: [this.options.topic], fromBeginning: false },
        run: { eachMessage: (payload) => this.apply(payload, signal) },
        restartBackoffMinMs: sideConsumerSettings.restartBackoffMinMs,
        restartBackoffMaxMs: sideConsumerSettings.restartBackoffMaxMs,
        disconnectTimeoutMs: shutdownTimeoutMs,
        // The cache must catch up whatever failed: it never gives up on the broker.
        stopOnNonRetriable: false,
      },
      {},
      this.logger,
    );
    return group.run(signal);
  }

  /** One event to Redis; retried (heartbeating) while Redis fails, so no event is skipped. */
  private async apply({ message, partition, heartbeat }: EachMessagePayload, signal: AbortSignal): Promise<void> {
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
  }
}
