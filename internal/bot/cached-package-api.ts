import type { Logger } from "../logger/logger.js";
import type { BotMetrics } from "./metrics.js";
import type { PackageApi } from "./package-api.js";
import type { PackageCache } from "./package-cache.js";

/** The original's names for what happened to a cache entry. */
export type CacheEventType = "Set description" | "Read description" | "Remove description";

/**
 * One message of the cache-events topic, with the original's fields. `id` is the
 * package id as a JSON number (written by hand: ids go up to 2^63). `success`: the
 * entry was found (Read), written (Set) or the removal done (Remove); false also when
 * Redis failed, or a fill was skipped because the package changed meanwhile.
 */
export function cacheEventJson(id: bigint, type: CacheEventType, success: boolean, at = new Date()): string {
  return `{"id":${id},"cacheEventType":${JSON.stringify(type)},"success":${success},"timestamp":${JSON.stringify(at.toISOString())}}`;
}

export type CacheEventSink = (id: bigint, type: CacheEventType, success: boolean) => void;

/**
 * Tracks whether Redis answers: one log line when it stops (and the bot answers
 * from the API), one when it is back, instead of a line per command; and the
 * logistic_package_api_bot_redis_up gauge.
 */
export class RedisHealth {
  private up = true;

  constructor(
    private readonly metrics: BotMetrics,
    private readonly logger: Logger,
  ) {
    metrics.redisUp.set(1);
  }

  ok(): void {
    if (this.up) return;
    this.up = true;
    this.metrics.redisUp.set(1);
    this.logger.info("redis answers again: the bot's cache is back in use");
  }

  failed(operation: string, err: unknown): void {
    this.metrics.cacheErrors.inc({ operation });
    if (!this.up) return;
    this.up = false;
    this.metrics.redisUp.set(0);
    this.logger.warn(
      { operation, err: { name: (err as Error).name, message: (err as Error).message } },
      "redis failed: the bot answers from the package API without its cache until redis is back",
    );
  }
}

/**
 * The original bot's cache-aside around Describe: /get (and the Describe of /edit
 * and /delete) read the cache first and fill it after a miss; Update and Remove drop
 * the entry; List and Create pass through (a Create's entry comes with its event).
 * Redis failing costs only the cache: every call still reaches the API.
 */
export function cachedPackageApi(
  inner: PackageApi,
  cache: PackageCache,
  health: RedisHealth,
  metrics: BotMetrics,
  emit: CacheEventSink,
): PackageApi {
  const invalidate = async (id: bigint) => {
    try {
      await cache.invalidate(id);
      health.ok();
      emit(id, "Remove description", true);
    } catch (err) {
      health.failed("invalidate", err);
      emit(id, "Remove description", false);
    }
  };
  return {
    create: (input, requestId) => inner.create(input, requestId),
    list: (offset, limit) => inner.list(offset, limit),
    async describe(id) {
      let token: string | undefined;
      try {
        const read = await cache.read(id);
        health.ok();
        emit(id, "Read description", read.hit);
        if (read.hit) {
          metrics.cacheHits.inc();
          return read.pkg;
        }
        metrics.cacheMisses.inc({ operation: "describe" });
        token = read.token;
      } catch (err) {
        health.failed("read", err);
        emit(id, "Read description", false);
      }
      const pkg = await inner.describe(id);
      if (token !== undefined) {
        try {
          const filled = await cache.fill(id, token, pkg);
          health.ok();
          if (!filled) metrics.cacheFillsSkipped.inc();
          emit(id, "Set description", filled);
        } catch (err) {
          health.failed("fill", err);
          emit(id, "Set description", false);
        }
      }
      return pkg;
    },
    async update(id, changes) {
      await inner.update(id, changes);
      await invalidate(id);
    },
    async remove(id) {
      await inner.remove(id);
      await invalidate(id);
    },
    close: () => inner.close(),
  };
}
