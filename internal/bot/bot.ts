import { Code, ConnectError } from "@connectrpc/connect";
import { Bot, GrammyError, HttpError, InlineKeyboard, type Context } from "grammy";
import type { Logger } from "../logger/logger.js";
import { escapeHtml, formatCreated, formatListPage, formatPackage, helpText } from "./format.js";
import type { PackageApi } from "./package-api.js";
import { parseEdit, parseNew, parseOffset, parsePackageId, usage, UserError } from "./parse.js";

export const notAllowedText = "Sorry, this chat is not allowed to use this bot.";
export const unavailableText = "Sorry, the package service is unavailable, try again later.";
const failedText = "Sorry, the package service could not do that. Try again later.";

/** The command menu shown by Telegram clients (setMyCommands). */
export const commandMenu = [
  { command: "list", description: "List packages" },
  { command: "get", description: "Show a package: /get ID" },
  { command: "new", description: "Create: /new title | material | volume | reusable" },
  { command: "edit", description: "Change: /edit ID field=value …" },
  { command: "delete", description: "Remove a package: /delete ID" },
  { command: "help", description: "How to use this bot" },
];

export interface PackageBotOptions {
  token: string;
  /** Bot API root without a trailing slash (https://api.telegram.org, or a test fake). */
  apiRoot: string;
  /** Chats that may use the bot; every other chat is told it is not allowed. */
  allowedChatIds: readonly number[];
  pageSize: number;
  api: PackageApi;
  logger: Logger;
}

/**
 * The bot's behaviour: access check, commands, paging buttons. It owns no
 * connection; the caller starts and stops polling (see app.ts).
 */
export function createPackageBot(options: PackageBotOptions): Bot {
  const { api, logger, pageSize } = options;
  const allowed = new Set(options.allowedChatIds);
  // Long polls last 30 s (grammY's default); every other call is short.
  const bot = new Bot(options.token, { client: { apiRoot: options.apiRoot, timeoutSeconds: 60 } });
  const html = { parse_mode: "HTML" as const, link_preview_options: { is_disabled: true } };

  // The access check runs first: an update from any other chat reaches no handler and no API call.
  bot.use(async (ctx, next) => {
    const chatId = ctx.chat?.id;
    if (chatId !== undefined && allowed.has(chatId)) return next();
    logger.warn({ chatId, updateId: ctx.update.update_id, userId: ctx.from?.id }, "update from a chat that is not allowed");
    if (ctx.callbackQuery !== undefined) await ctx.answerCallbackQuery({ text: notAllowedText });
    else if (ctx.message !== undefined && chatId !== undefined) await ctx.reply(notAllowedText);
  });

  /** Runs one command: a failure becomes a short reply, never a stack trace; one log line per command. */
  const command =
    (name: string, handler: (ctx: Context, args: string) => Promise<void>) =>
    async (ctx: Context): Promise<void> => {
      const started = performance.now();
      const fields = { command: name, chatId: ctx.chat?.id };
      let outcome = "ok";
      try {
        await handler(ctx, typeof ctx.match === "string" ? ctx.match : "");
      } catch (err) {
        const failure = explain(err);
        outcome = failure.outcome;
        logFailure(logger, options.token, fields, err, failure);
        await ctx.reply(escapeHtml(failure.text), html);
      }
      logger.info({ ...fields, outcome, durationMs: Math.round(performance.now() - started) }, "command handled");
    };

  const listPage = async (offset: bigint) => {
    // One more than a page tells whether a next page exists.
    const rows = await api.list(offset, pageSize + 1);
    const page = rows.slice(0, pageSize);
    const keyboard = new InlineKeyboard();
    if (offset > 0n) {
      const prev = offset > BigInt(pageSize) ? offset - BigInt(pageSize) : 0n;
      keyboard.text("◀ Prev", `list:${prev}`);
    }
    if (rows.length > pageSize) keyboard.text("Next ▶", `list:${offset + BigInt(pageSize)}`);
    const hasButtons = keyboard.inline_keyboard.some((row) => row.length > 0);
    return { text: formatListPage(page, offset), keyboard: hasButtons ? keyboard : undefined };
  };

  const messages = bot.on("message");
  messages.command(["help", "start"], command("help", (ctx) => ctx.reply(helpText(pageSize), html).then(() => undefined)));

  messages.command(
    "list",
    command("list", async (ctx) => {
      const page = await listPage(0n);
      await ctx.reply(page.text, { ...html, ...(page.keyboard && { reply_markup: page.keyboard }) });
    }),
  );

  messages.command(
    "get",
    command("get", async (ctx, args) => {
      const id = parsePackageId(args, usage.get);
      const pkg = await orNotFound(id, api.describe(id));
      await ctx.reply(formatPackage(pkg, `Package ${id}`), html);
    }),
  );

  messages.command(
    "new",
    command("new", async (ctx, args) => {
      const input = parseNew(args);
      // Telegram delivers an update again when the bot stopped before confirming it
      // (a crash, a kill): keyed by the message, the repeat creates nothing new.
      const requestId = `telegram:${ctx.chat!.id}:${ctx.msg!.message_id}`;
      const id = await api.create(input, requestId);
      await ctx.reply(formatCreated(id, input), html);
    }),
  );

  messages.command(
    "edit",
    command("edit", async (ctx, args) => {
      const { id, changes } = parseEdit(args);
      await orNotFound(id, api.update(id, changes));
      // The whole package after the change, read back from the service.
      const pkg = await orNotFound(id, api.describe(id));
      await ctx.reply(formatPackage(pkg, `Updated package ${id}`), html);
    }),
  );

  messages.command(
    "delete",
    command("delete", async (ctx, args) => {
      const id = parsePackageId(args, usage.delete);
      await orNotFound(id, api.remove(id));
      await ctx.reply(`<b>Deleted package ${id}</b>`, html);
    }),
  );

  messages.on("message:text", async (ctx) => {
    if (ctx.message.text.startsWith("/")) {
      await ctx.reply("Unknown command. Send /help for the list of commands.");
    } else if (ctx.chat.type === "private") {
      await ctx.reply("Send /help for the list of commands.");
    }
  });

  // Paging buttons edit the message they belong to.
  bot.callbackQuery(/^list:(\d+)$/, async (ctx) => {
    const offset = parseOffset(ctx.match[1]!);
    if (offset === undefined) {
      await ctx.answerCallbackQuery({ text: "This button no longer works: send /list." });
      return;
    }
    try {
      const page = await listPage(offset);
      try {
        await ctx.editMessageText(page.text, { ...html, ...(page.keyboard && { reply_markup: page.keyboard }) });
      } catch (err) {
        // A second tap on the same button: the page did not change, nothing to do.
        if (!(err instanceof GrammyError && /message is not modified/i.test(err.description))) throw err;
      }
      await ctx.answerCallbackQuery();
    } catch (err) {
      const failure = explain(err);
      logFailure(logger, options.token, { command: "list-page", chatId: ctx.chat?.id, offset: offset.toString() }, err, failure);
      await ctx.answerCallbackQuery({ text: failure.text });
    }
  });
  bot.on("callback_query", (ctx) => ctx.answerCallbackQuery({ text: "This button no longer works: send /list." }));

  bot.catch((err) => {
    logger.error(
      { err: safeTelegramError(err.error, options.token), updateId: err.ctx.update.update_id },
      "update handling failed",
    );
  });
  return bot;
}

async function orNotFound<T>(id: bigint, call: Promise<T>): Promise<T> {
  try {
    return await call;
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.NotFound) throw new UserError(`Package ${id} not found.`);
    throw err;
  }
}

interface Failure {
  text: string;
  outcome: "rejected" | "invalid_argument" | "unavailable" | "failed";
}

/** What the user is told. Only messages written for users pass through: bot input errors and the API's InvalidArgument. */
export function explain(err: unknown): Failure {
  if (err instanceof UserError) return { text: err.message, outcome: "rejected" };
  if (err instanceof ConnectError) {
    switch (err.code) {
      case Code.InvalidArgument:
        // The API names the field and the rule, e.g. "Title must be 1 to 32 characters long (got 40)".
        return { text: `Not accepted: ${err.rawMessage}`, outcome: "invalid_argument" };
      case Code.Unavailable:
      case Code.DeadlineExceeded:
      case Code.ResourceExhausted:
      case Code.Aborted:
        return { text: unavailableText, outcome: "unavailable" };
      default:
        return { text: failedText, outcome: "failed" };
    }
  }
  return { text: failedText, outcome: "failed" };
}

function logFailure(logger: Logger, token: string, fields: Record<string, unknown>, err: unknown, failure: Failure): void {
  if (failure.outcome === "rejected" || failure.outcome === "invalid_argument") {
    logger.info({ ...fields, reason: failure.text }, "command rejected");
  } else if (err instanceof ConnectError) {
    const level = failure.outcome === "unavailable" ? "warn" : "error";
    logger[level]({ ...fields, code: Code[err.code], error: err.rawMessage, cause: err.cause }, "package service call failed");
  } else {
    // Most likely a Telegram call that failed: its error may hold the token.
    logger.error({ ...fields, err: safeTelegramError(err, token) }, "command failed");
  }
}

/**
 * grammY's HttpError keeps the fetch error, whose message holds the request
 * URL, and so the bot token. Only these fields go to the log.
 */
export function safeTelegramError(err: unknown, token: string): Record<string, unknown> {
  const redact = (s: string) => (token === "" ? s : s.split(token).join("<token>"));
  if (err instanceof GrammyError) {
    return { type: "GrammyError", method: err.method, errorCode: err.error_code, description: redact(err.description) };
  }
  if (err instanceof HttpError) {
    const cause = err.error instanceof Error ? redact(err.error.message) : undefined;
    return { type: "HttpError", message: redact(err.message), cause };
  }
  if (err instanceof Error) return { type: err.name, message: redact(err.message), stack: err.stack && redact(err.stack) };
  return { type: typeof err, message: redact(String(err)) };
}
