import { GrammyError } from "grammy";
import { ConfigError, type Config } from "../config/config.js";
import type { Logger } from "../logger/logger.js";
import { commandMenu, createPackageBot, safeTelegramError } from "./bot.js";
import { grpcPackageApi } from "./package-api.js";

export interface BotApp {
  /** The bot's @username, from getMe. */
  username: string;
  /** Graceful stop: end the long poll, let the update in hand finish, close the gRPC connection. */
  stop(): Promise<void>;
}

export interface BotAppOptions {
  /**
   * Called when polling ends by itself (Telegram rejected the token, or another
   * process polls with it). The binary then exits 1; tests observe it.
   */
  onPollingFailed?: (err: unknown) => void;
}

// Bounds each shutdown step: a Telegram that does not answer must not keep the process alive.
const stopStepTimeoutMs = 5000;

/** Wires the bot binary: config → gRPC client → grammY bot with long polling. */
export async function startBotApp(
  config: Readonly<Config>,
  logger: Logger,
  options: BotAppOptions = {},
): Promise<BotApp> {
  const settings = config.bot;
  if (settings.token === "") {
    throw new ConfigError(
      'config key "bot.token" (env TELEGRAM_BOT_TOKEN) is empty: set it to the token @BotFather gave the bot',
    );
  }
  if (settings.allowedChatIds.length === 0) {
    logger.warn("bot.allowedChatIds (TELEGRAM_ALLOWED_CHAT_IDS) is empty: every chat will be told it is not allowed");
  }
  const onPollingFailed = options.onPollingFailed ?? (() => void (process.exitCode = 1));

  const api = grpcPackageApi({ address: settings.grpcAddress, timeoutMs: settings.requestTimeoutMs });
  const bot = createPackageBot({
    token: settings.token,
    apiRoot: settings.apiRoot,
    allowedChatIds: settings.allowedChatIds,
    pageSize: settings.pageSize,
    api,
    logger,
  });

  try {
    // getMe: checks the token (grammY retries network errors; a 401 fails at once).
    logger.info({ apiRoot: settings.apiRoot }, "connecting to the Telegram Bot API");
    await bot.init();
  } catch (err) {
    api.close();
    if (err instanceof GrammyError && (err.error_code === 401 || err.error_code === 404)) {
      throw new ConfigError(`config key "bot.token" (env TELEGRAM_BOT_TOKEN): Telegram rejected the token (${err.description})`);
    }
    const safe = safeTelegramError(err, settings.token);
    throw new Error(`getMe at the Telegram Bot API (${settings.apiRoot}) failed: ${String(safe["description"] ?? safe["message"])}`);
  }
  try {
    await bot.api.setMyCommands(commandMenu);
  } catch (err) {
    // Only the clients' command menu depends on it.
    logger.warn({ err: safeTelegramError(err, settings.token) }, "setMyCommands failed");
  }

  let stopping = false;
  let started = false;
  let markStarted: () => void = () => {};
  const polling = bot
    .start({
      // Edited messages are not commands to run again.
      allowed_updates: ["message", "callback_query"],
      onStart: () => {
        started = true;
        logger.info(
          { username: bot.botInfo.username, grpcAddress: settings.grpcAddress, allowedChats: settings.allowedChatIds.length },
          "bot started",
        );
        markStarted();
      },
    })
    .catch((err: unknown) => {
      if (stopping) return;
      api.close();
      const safe = safeTelegramError(err, settings.token);
      if (!started) throw new Error(`starting long polling failed: ${String(safe["description"] ?? safe["message"])}`);
      logger.fatal({ err: safe }, "polling failed: the bot stops");
      onPollingFailed(err);
    });
  // Resolved once deleteWebhook is done and the first long poll goes out.
  await Promise.race([new Promise<void>((resolve) => (markStarted = resolve)), polling]);

  return {
    username: bot.botInfo.username,
    async stop() {
      stopping = true;
      // Aborts the long poll and confirms the updates already taken.
      await withTimeout(bot.stop(), stopStepTimeoutMs).catch((err: unknown) =>
        logger.warn({ err: safeTelegramError(err, settings.token) }, "telegram did not confirm the last updates"),
      );
      // The update in hand finishes: its API call is bounded by requestTimeoutMs.
      await withTimeout(polling, settings.requestTimeoutMs + stopStepTimeoutMs).catch((err: unknown) =>
        logger.warn({ err: safeTelegramError(err, settings.token) }, "the last update did not finish in time"),
      );
      api.close();
    },
  };
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
