import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { GrammyError } from "grammy";
import { ConfigError, type Config } from "../config/config.js";
import type { Logger } from "../logger/logger.js";
import { commandMenu, createPackageBot, safeTelegramError } from "./bot.js";
import { grpcPackageApi, type GrpcPackageApiOptions } from "./package-api.js";

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
  if (settings.users.length === 0) {
    logger.warn("bot.users (TELEGRAM_USERS) is empty: every user will be told they are not allowed");
  }
  const onPollingFailed = options.onPollingFailed ?? (() => void (process.exitCode = 1));

  const api = grpcPackageApi({
    address: settings.grpcAddress,
    timeoutMs: settings.requestTimeoutMs,
    token: settings.apiToken,
    ...(settings.apiTls && { tls: readTlsFiles(settings) }),
  });
  const bot = createPackageBot({
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

/**
 * Reads the PEM files at start-up, so that a wrong path or a file that is not PEM
 * stops the bot naming the key, instead of failing on the first command.
 */
function readTlsFiles(settings: Config["bot"]): NonNullable<GrpcPackageApiOptions["tls"]> {
  const read = (key: "apiCaFile" | "apiCertFile" | "apiKeyFile", env: string): Buffer | undefined => {
    const path = settings[key];
    if (path === "") return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new ConfigError(`config key "bot.${key}" (env ${env}): cannot read ${path}: ${(err as Error).message}`);
    }
  };
  const ca = read("apiCaFile", "BOT_API_CA_FILE");
  const cert = read("apiCertFile", "BOT_API_CERT_FILE");
  const key = read("apiKeyFile", "BOT_API_KEY_FILE");
  const check = (what: string, build: () => unknown) => {
    try {
      build();
    } catch (err) {
      throw new ConfigError(`${what}: ${(err as Error).message}`);
    }
  };
  // createSecureContext ignores a CA file without certificates; X509Certificate does not.
  if (ca !== undefined) {
    check(`config key "bot.apiCaFile" (env BOT_API_CA_FILE): ${settings.apiCaFile} is not a PEM certificate`, () => new X509Certificate(ca));
  }
  if (cert !== undefined && key !== undefined) {
    check(
      `config keys "bot.apiCertFile", "bot.apiKeyFile" (env BOT_API_CERT_FILE, BOT_API_KEY_FILE): not a matching PEM certificate and key`,
      () => createSecureContext({ cert, key }),
    );
  }
  return { ...(ca !== undefined && { ca }), ...(cert !== undefined && { cert }), ...(key !== undefined && { key }) };
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
