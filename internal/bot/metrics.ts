import { Counter, Gauge, type Registry } from "prom-client";

/** The bot's metrics, on its own registry and port (bot.metricsPort). */
export class BotMetrics {
  /** Describe served from Redis. */
  readonly cacheHits: Counter;
  /** Describe not in Redis: read from the API. */
  readonly cacheMisses: Counter<"operation">;
  /** Redis commands that failed or timed out; the command was answered from the API. */
  readonly cacheErrors: Counter<"operation">;
  /** Cache fills skipped because a newer change arrived while the API was read. */
  readonly cacheFillsSkipped: Counter;
  /** Package events applied to the cache, by outcome (applied | stale | invalid | error). */
  readonly packageEvents: Counter<"outcome">;
  /** 1 while the last Redis command succeeded, 0 after one failed. */
  readonly redisUp: Gauge;
  readonly published: Counter<"topic">;
  /** Attempts that failed (each retry counts). */
  readonly publishFailures: Counter<"topic">;
  /** Messages given up: retries spent, or pushed out of a full queue. */
  readonly dropped: Counter<"topic" | "reason">;
  readonly queued: Gauge<"topic">;

  constructor(registry: Registry) {
    const registers = [registry];
    this.cacheHits = new Counter({
      name: "logistic_package_api_bot_cache_hits_total",
      help: "Describe calls served from the Redis cache",
      registers,
    });
    this.cacheMisses = new Counter({
      name: "logistic_package_api_bot_cache_misses_total",
      help: "Describe calls not in the cache, read from the API",
      labelNames: ["operation"],
      registers,
    });
    this.cacheErrors = new Counter({
      name: "logistic_package_api_bot_cache_errors_total",
      help: "Redis commands that failed or timed out, by operation (read, fill, invalidate, event); the bot answered from the API",
      labelNames: ["operation"],
      registers,
    });
    this.cacheFillsSkipped = new Counter({
      name: "logistic_package_api_bot_cache_fills_skipped_total",
      help: "Cache fills after a miss that were skipped because the package changed while the API was read",
      registers,
    });
    this.packageEvents = new Counter({
      name: "logistic_package_api_bot_package_events_total",
      help: "Package events consumed for the cache, by outcome: applied (newer), stale (a late or repeated copy), invalid, error (Redis failed)",
      labelNames: ["outcome"],
      registers,
    });
    this.redisUp = new Gauge({
      name: "logistic_package_api_bot_redis_up",
      help: "1 while Redis answers the bot, 0 since a command failed (the bot answers from the API)",
      registers,
    });
    this.published = new Counter({
      name: "logistic_package_api_bot_messages_published_total",
      help: "Messages the broker acknowledged, per topic",
      labelNames: ["topic"],
      registers,
    });
    this.publishFailures = new Counter({
      name: "logistic_package_api_bot_publish_failures_total",
      help: "Publish attempts that failed, per topic (each retry counts)",
      labelNames: ["topic"],
      registers,
    });
    this.dropped = new Counter({
      name: "logistic_package_api_bot_messages_dropped_total",
      help: "Messages given up, per topic and reason: retries (every attempt failed) or queue_full (the oldest was pushed out)",
      labelNames: ["topic", "reason"],
      registers,
    });
    this.queued = new Gauge({
      name: "logistic_package_api_bot_publish_queue_messages",
      help: "Messages waiting to be published, per topic",
      labelNames: ["topic"],
      registers,
    });
  }
}
