import { type Context, GrammyError } from "grammy";
import { Redis } from "ioredis";
import { readApiTlsFiles } from "../bot/api-tls-files.js";
import { commandMenu, createPackageBot, safeTelegramError } from "../bot/bot.js";
import { type CacheEventSink, cachedPackageApi, cacheEventJson, RedisHealth } from "../bot/cached-package-api.js";
import { commandJson } from "../bot/command-record.js";
import { BotMetrics } from "../bot/metrics.js";
import { grpcPackageApi, type PackageApi } from "../bot/package-api.js";
import { PackageCache } from "../bot/package-cache.js";
import { PackageEventCache } from "../bot/package-event-cache.js";
import { TopicPublisher } from "../bot/topic-publisher.js";
import { type Config, ConfigError } from "../config/config.js";
import { metricsHost } from "../config/listen-hosts.js";
import type { KafkaClientSecurity } from "../kafka/security.js";
import { withDeadline } from "../lifecycle/deadline.js";
import type { Logger } from "../logger/logger.js";
import { kafkaConnection } from "./kafka-connection.js";
import { startWithScaffold } from "./scaffold.js";

export interface BotApp {
  /** The bot's @username, from getMe. */
  username: string;
  /** Port of /metrics, /live, /ready and /version (bot.metricsPort; 0 there picks a free one). */
  ports: { metrics: number };
  /** Graceful stop: end the long poll, let the update in hand finish, close the gRPC connection. */
  stop(): Promise<void>;
}

export interface BotAppOptions {
  /**
   * Called when polling ends by itself (Telegram rejected the token, or another
   * process polls with it); by default it sets the exit code to 1. /live then
   * answers 503, so that the orchestrator restarts the bot.
   */
  onPollingFailed?: (err: unknown) => void;
}

// Bounds each shutdown step: a Telegram that does not answer must not keep the process alive.
const stopStepTimeoutMs = 5000;

/**
 * Wires the bot binary's own parts on the process scaffold (scaffold.ts): the
 * gRPC client of the API, the grammY bot with long polling, and the cache and
 * topics where configured. No database: /ready answers while polling runs.
 */
export function startBotApp(config: Readonly<Config>, logger: Logger, options: BotAppOptions = {}): Promise<BotApp> {
  const settings = config.bot;
  // The stop's steps: Telegram's confirmation, then the update in hand (bounded by requestTimeoutMs).
  const drainMs = stopStepTimeoutMs + settings.requestTimeoutMs + stopStepTimeoutMs;
  return startWithScaffold({ binary: "bot", config, logger, drainMs }, async (scaffold) => {
    if (settings.token === "") {
      throw new ConfigError(
        'config key "bot.token" (env TELEGRAM_BOT_TOKEN) is empty: set it to the token @BotFather gave the bot',
      );
    }
    if (settings.allowedChatIds.length === 0) {
      logger.warn("bot.allowedChatIds (TELEGRAM_ALLOWED_CHAT_IDS) is empty: every chat will be told it is not allowed");
    }
    if (settings.users.length === 0) {
      logger.warn("bot.users (TELEGRAM_USERS) is empty: every user will be told they are not allowed");
    }
    const onPollingFailed = options.onPollingFailed ?? (() => void (process.exitCode = 1));
    const tls = settings.apiTls ? readApiTlsFiles(settings) : undefined;
    // An unreadable Kafka CA file stops start-up here, naming the key.
    const kafkaSecurity = settings.kafka.enabled ? kafkaConnection(config, logger) : undefined;

    let pollingFailure: unknown;
    const ready = scaffold.readiness(async () => {
      if (pollingFailure !== undefined) throw new Error("polling failed: the bot stopped");
    });
    const metrics = new BotMetrics(scaffold.registry);
    const metricsPort = await scaffold.serveStatus(
      { port: settings.metricsPort, host: metricsHost(config) },
      {
        probes: {
          ready,
          // A bot whose polling ended (a revoked token, another process polling with it) does
          // nothing more: /live fails so that the orchestrator restarts it.
          live: () =>
            pollingFailure === undefined
              ? undefined
              : { status: "polling failed", reason: "long polling ended; the bot takes no more updates" },
        },
        metrics: true,
      },
    );
    const extras = startExtras(config, logger, metrics, kafkaSecurity);
    // After the last update: its cache writes and messages are in the queue.
    scaffold.defer("cache and topics", () => extras.stop());

    const api = extras.wrap(
      grpcPackageApi({
        address: settings.grpcAddress,
        timeoutMs: settings.requestTimeoutMs,
        token: settings.apiToken,
        ...(tls !== undefined && { tls }),
      }),
    );
    scaffold.defer("api client", () => api.close());
    const bot = createPackageBot({
      onUpdate: extras.onUpdate,
      token: settings.token,
      apiRoot: settings.apiRoot,
      allowedChatIds: settings.allowedChatIds,
      users: settings.users,
      pageSize: settings.pageSize,
      deleteConfirmTimeoutMs: settings.deleteConfirmTimeoutMs,
      api,
      logger,
    });

    try {
      // getMe: checks the token (grammY retries network errors; a 401 fails at once).
      logger.info({ apiRoot: settings.apiRoot }, "connecting to the Telegram Bot API");
      await bot.init();
    } catch (err) {
      if (err instanceof GrammyError && (err.error_code === 401 || err.error_code === 404)) {
        throw new ConfigError(
          `config key "bot.token" (env TELEGRAM_BOT_TOKEN): Telegram rejected the token (${err.description})`,
        );
      }
      const safe = safeTelegramError(err, settings.token);
      throw new Error(
        `getMe at the Telegram Bot API (${settings.apiRoot}) failed: ${String(safe.description ?? safe.message)}`,
      );
    }
    try {
      await bot.api.setMyCommands(commandMenu);
    } catch (err) {
      // Only the clients' command menu depends on it.
      logger.warn({ err: safeTelegramError(err, settings.token) }, "setMyCommands failed");
    }

    let started = false;
    let markStarted: () => void = () => {};
    const polling = bot
      .start({
        // Edited messages are not commands to run again.
        allowed_updates: ["message", "callback_query"],
        onStart: () => {
          started = true;
          logger.info(
            {
              username: bot.botInfo.username,
              grpcAddress: settings.grpcAddress,
              apiTls: settings.apiTls,
              // Whether a token is sent, never the token.
              apiToken: settings.apiToken !== "",
              allowedChats: settings.allowedChatIds.length,
              users: settings.users.length,
            },
            "bot started",
          );
          markStarted();
        },
      })
      .catch((err: unknown) => {
        if (scaffold.stopping.aborted) return;
        pollingFailure = err;
        api.close();
        void extras.stop();
        const safe = safeTelegramError(err, settings.token);
        if (!started) throw new Error(`starting long polling failed: ${String(safe.description ?? safe.message)}`);
        logger.fatal({ err: safe }, "polling failed: the bot stops");
        onPollingFailed(err);
      });
    scaffold.defer("polling", async () => {
      // Aborts the long poll and confirms the updates already taken.
      await withDeadline(bot.stop(), stopStepTimeoutMs, timedOut(stopStepTimeoutMs)).catch((err: unknown) =>
        logger.warn({ err: safeTelegramError(err, settings.token) }, "telegram did not confirm the last updates"),
      );
      // The update in hand finishes: its API call is bounded by requestTimeoutMs.
      const lastUpdateMs = settings.requestTimeoutMs + stopStepTimeoutMs;
      await withDeadline(polling, lastUpdateMs, timedOut(lastUpdateMs)).catch((err: unknown) =>
        logger.warn({ err: safeTelegramError(err, settings.token) }, "the last update did not finish in time"),
      );
    });
    // Resolved once deleteWebhook is done and the first long poll goes out.
    await Promise.race([new Promise<void>((resolve) => (markStarted = resolve)), polling]);
    return { username: bot.botInfo.username, ports: { metrics: metricsPort } };
  });
}

const timedOut = (ms: number) => () => new Error(`timed out after ${ms} ms`);

interface Extras {
  /** The API as the bot uses it: through the cache when there is one. */
  wrap(api: PackageApi): PackageApi;
  onUpdate: ((ctx: Context) => void) | undefined;
  /** Ends the loops (publisher, event consumer) and closes Redis; once. */
  stop(): Promise<void>;
}

/**
 * The Redis cache, the publisher of the bot's topics and the package-event consumer
 * that keeps the cache coherent, each only where configured. One AbortController
 * ends their loops; stop() awaits them.
 */
function startExtras(
  config: Readonly<Config>,
  logger: Logger,
  metrics: BotMetrics,
  kafkaSecurity: KafkaClientSecurity | undefined,
): Extras {
  const settings = config.bot;
  const abort = new AbortController();
  const loops: Promise<void>[] = [];
  let publish: ((topic: string, key: string, value: string) => void) | undefined;
  if (kafkaSecurity !== undefined) {
    const publisher = new TopicPublisher(
      {
        brokers: config.kafka.brokers,
        clientId: `${config.kafka.clientId}-bot`,
        topics: [settings.kafka.commandsTopic, settings.kafka.cacheEventsTopic],
        partitions: config.kafka.partitions,
        replicationFactor: config.kafka.replicationFactor,
        requestTimeoutMs: config.kafka.requestTimeoutMs,
        queueSize: settings.kafka.queueSize,
        sendRetries: settings.kafka.sendRetries,
        security: kafkaSecurity,
      },
      metrics,
      logger,
    );
    loops.push(publisher.ensureTopics().then(() => publisher.run(abort.signal)));
    publish = (topic, key, value) => publisher.publish(topic, key, value);
  }
  const emit: CacheEventSink = (id, type, success) =>
    publish?.(settings.kafka.cacheEventsTopic, id.toString(), cacheEventJson(id, type, success));

  let redis: Redis | undefined;
  let wrap = (api: PackageApi) => api;
  if (settings.cache.redisUrl !== "") {
    const health = new RedisHealth(metrics, logger);
    redis = new Redis(settings.cache.redisUrl, {
      // Fail fast while Redis is away (the command goes to the API) instead of queueing.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: settings.cache.timeoutMs,
      connectTimeout: Math.max(1000, settings.cache.timeoutMs),
      // Reconnects for as long as the bot runs, backing off to 2 s.
      retryStrategy: (times) => Math.min(times * 100, 2000),
    });
    redis.on("error", (err: Error) => health.failed("connection", err));
    redis.on("ready", () => health.ok());
    const cache = new PackageCache(redis, settings.cache);
    wrap = (api) => cachedPackageApi(api, cache, health, metrics, emit);
    const target = new URL(settings.cache.redisUrl);
    logger.info(
      {
        redis: `${target.hostname}:${target.port || 6379}`,
        keyPrefix: settings.cache.keyPrefix,
        ttlSeconds: settings.cache.ttlSeconds,
      },
      "bot cache in redis",
    );
    if (kafkaSecurity !== undefined) {
      const events = new PackageEventCache(
        {
          brokers: config.kafka.brokers,
          clientId: config.kafka.clientId,
          topic: config.kafka.topic,
          groupId: settings.kafka.groupId,
          security: kafkaSecurity,
        },
        cache,
        health,
        metrics,
        emit,
        logger,
      );
      loops.push(events.run(abort.signal));
    } else {
      logger.warn(
        { ttlSeconds: settings.cache.ttlSeconds },
        "bot.kafka.enabled is off: the cache does not see other clients' changes; a cached package may be stale up to bot.cache.ttlSeconds",
      );
    }
  }
  let stopped: Promise<void> | undefined;
  return {
    wrap,
    onUpdate:
      publish === undefined
        ? undefined
        : (ctx) => publish(settings.kafka.commandsTopic, String(ctx.from?.id ?? 0), commandJson(ctx)),
    stop() {
      stopped ??= (async () => {
        abort.abort();
        for (const result of await Promise.allSettled(loops)) {
          if (result.status === "rejected")
            logger.warn({ err: result.reason }, "a bot background loop ended with an error");
        }
        if (redis !== undefined) await redis.quit().catch(() => redis!.disconnect());
      })();
      return stopped;
    },
  };
}
