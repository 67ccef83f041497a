import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { Bot, type Context, GrammyError, HttpError, InlineKeyboard } from "grammy";
import type { Logger } from "../logger/logger.js";
import { escapeHtml, formatCreated, formatListPage, formatPackage, formatVolume, helpText } from "./format.js";
import type { PackageApi } from "./package-api.js";
import { parseEdit, parseNew, parseOffset, parsePackageId, UserError, usage } from "./parse.js";

export const notAllowedText = "Sorry, this chat is not allowed to use this bot.";
/** Names the user's id: it is what the operator adds to bot.users (TELEGRAM_USERS). */
export const userNotAllowedText = (userId: number | undefined) =>
  `Sorry, you are not allowed to use this bot (your Telegram user id is ${userId ?? "unknown"}).`;
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

export type Role = "reader" | "writer" | "admin";
const roleRank: Record<Role, number> = { reader: 0, writer: 1, admin: 2 };
/** Whether `role` may do what `needed` may (admin ⊇ writer ⊇ reader). */
export const roleAllows = (role: Role, needed: Role) => roleRank[role] >= roleRank[needed];

/** The context of an update that passed the access check: the sender's role is known. */
export type BotContext = Context & { role: Role };

export interface PackageBotOptions {
  token: string;
  /** Bot API root without a trailing slash (https://api.telegram.org, or a test fake). */
  apiRoot: string;
  /** Chats that may use the bot; every other chat is told it is not allowed. */
  allowedChatIds: readonly number[];
  /** Users (Telegram from.id) who may use the bot, with their role; everyone else is refused. */
  users: readonly { id: number; role: Role }[];
  pageSize: number;
  /** How long /delete's Yes/No buttons stay valid. */
  deleteConfirmTimeoutMs: number;
  api: PackageApi;
  logger: Logger;
  /** Sees every update first, before the access check (the bot publishes it to its commands topic). Must not throw or wait. */
  onUpdate?: (ctx: Context) => void;
}

/**
 * The bot's behaviour: access check (chat and user), roles, commands, paging and
 * /delete confirmation buttons. It owns no connection; the caller starts and
 * stops polling (internal/app/start-bot.ts).
 */
export function createPackageBot(options: PackageBotOptions): Bot<BotContext> {
  const { api, logger, pageSize } = options;
  const allowed = new Set(options.allowedChatIds);
  const roles = new Map(options.users.map((u) => [u.id, u.role]));
  const confirmations = new Confirmations(options.deleteConfirmTimeoutMs);
  // Long polls last 30 s (grammY's default); every other call is short.
  const bot = new Bot<BotContext>(options.token, { client: { apiRoot: options.apiRoot, timeoutSeconds: 60 } });
  const html = { parse_mode: "HTML" as const, link_preview_options: { is_disabled: true } };

  if (options.onUpdate !== undefined) {
    const onUpdate = options.onUpdate;
    bot.use((ctx, next) => {
      onUpdate(ctx);
      return next();
    });
  }

  // The access check runs first: an update from any other chat, or from a user not in
  // bot.users (in an allowed group, say), reaches no handler and no API call.
  bot.use(async (ctx, next) => {
    const chatId = ctx.chat?.id;
    const userId = ctx.from?.id;
    const refuse = async (text: string) => {
      if (ctx.callbackQuery !== undefined) await ctx.answerCallbackQuery({ text, show_alert: true });
      else if (ctx.message !== undefined && chatId !== undefined) await ctx.reply(text);
    };
    if (chatId === undefined || !allowed.has(chatId)) {
      logger.warn({ chatId, updateId: ctx.update.update_id, userId }, "update from a chat that is not allowed");
      return refuse(notAllowedText);
    }
    const role = userId === undefined ? undefined : roles.get(userId);
    if (role === undefined) {
      logger.warn({ chatId, updateId: ctx.update.update_id, userId }, "update from a user who is not allowed");
      return refuse(userNotAllowedText(userId));
    }
    ctx.role = role;
    return next();
  });

  /**
   * Runs one command: the role check first, then the handler; a failure becomes a
   * short reply, never a stack trace; one log line per command.
   */
  const command =
    (name: string, needed: Role, handler: (ctx: BotContext, args: string) => Promise<void>) =>
    async (ctx: BotContext): Promise<void> => {
      const started = performance.now();
      const fields = { command: name, chatId: ctx.chat?.id, userId: ctx.from?.id, role: ctx.role };
      let outcome = "ok";
      try {
        if (!roleAllows(ctx.role, needed)) {
          outcome = "forbidden";
          await ctx.reply(`Sorry, /${name} needs the ${needed} role; yours is ${ctx.role}. Ask the bot's operator.`);
        } else {
          await handler(ctx, typeof ctx.match === "string" ? ctx.match : "");
        }
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
  messages.command(
    ["help", "start"],
    command("help", "reader", (ctx) => ctx.reply(helpText(pageSize, ctx.role), html).then(() => undefined)),
  );

  messages.command(
    "list",
    command("list", "reader", async (ctx) => {
      const page = await listPage(0n);
      await ctx.reply(page.text, { ...html, ...(page.keyboard && { reply_markup: page.keyboard }) });
    }),
  );

  messages.command(
    "get",
    command("get", "reader", async (ctx, args) => {
      const id = parsePackageId(args, usage.get);
      const pkg = await orNotFound(id, api.describe(id));
      await ctx.reply(formatPackage(pkg, `Package ${id}`), html);
    }),
  );

  messages.command(
    "new",
    command("new", "writer", async (ctx, args) => {
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
    command("edit", "writer", async (ctx, args) => {
      const { id, changes } = parseEdit(args);
      await orNotFound(id, api.update(id, changes));
      // The whole package after the change, read back from the service.
      const pkg = await orNotFound(id, api.describe(id));
      await ctx.reply(formatPackage(pkg, `Updated package ${id}`), html);
    }),
  );

  messages.command(
    "delete",
    command("delete", "admin", async (ctx, args) => {
      const id = parsePackageId(args, usage.delete);
      // Shown in the question, so the user confirms the package they mean; an unknown ID ends here.
      const pkg = await orNotFound(id, api.describe(id));
      const key = confirmations.open({ packageId: id, userId: ctx.from!.id, chatId: ctx.chat!.id });
      const seconds = Math.round(options.deleteConfirmTimeoutMs / 1000);
      const keyboard = new InlineKeyboard().text("Yes, delete", `delete:${key}:yes`).text("No", `delete:${key}:no`);
      await ctx.reply(
        [
          `<b>Delete package ${id}?</b>`,
          `${escapeHtml(pkg.Title)} · ${escapeHtml(pkg.Material)} · ${formatVolume(pkg.MaximumVolume)} cm³`,
          `Only you can answer, within ${seconds} s.`,
        ].join("\n"),
        { ...html, reply_markup: keyboard },
      );
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
      logFailure(
        logger,
        options.token,
        { command: "list-page", chatId: ctx.chat?.id, offset: offset.toString() },
        err,
        failure,
      );
      await ctx.answerCallbackQuery({ text: failure.text });
    }
  });
  // The /delete confirmation: one answer, from the user who asked, before it expires.
  bot.callbackQuery(/^delete:([A-Za-z0-9_-]{1,32}):(yes|no)$/, async (ctx) => {
    const started = performance.now();
    const fields = { command: "delete-confirm", chatId: ctx.chat?.id, userId: ctx.from.id };
    const found = confirmations.find(ctx.match[1]!);
    const log = (outcome: string, extra: Record<string, unknown> = {}) =>
      logger.info(
        { ...fields, ...extra, outcome, durationMs: Math.round(performance.now() - started) },
        "command handled",
      );
    if (found === undefined || found.pending.chatId !== ctx.chat?.id) {
      // Already answered, or asked before the bot restarted.
      await ctx.answerCallbackQuery({ text: "This confirmation is no longer valid: send /delete ID again." });
      return log("stale");
    }
    const { pending, expired } = found;
    const id = pending.packageId;
    if (ctx.from.id !== pending.userId) {
      // Stays open for its owner.
      await ctx.answerCallbackQuery({ text: "Only the user who sent this /delete can answer it.", show_alert: true });
      return log("not_owner", { packageId: id.toString() });
    }
    confirmations.close(ctx.match[1]!);
    if (expired) {
      await ctx.editMessageText(`Package ${id} was not deleted: the confirmation expired. Send /delete ${id} again.`);
      await ctx.answerCallbackQuery({ text: "Expired: nothing deleted." });
      return log("expired", { packageId: id.toString() });
    }
    if (ctx.match[2] === "no") {
      await ctx.editMessageText(`Kept package ${id}: nothing deleted.`);
      await ctx.answerCallbackQuery({ text: "Nothing deleted." });
      return log("cancelled", { packageId: id.toString() });
    }
    try {
      await orNotFound(id, api.remove(id));
      await ctx.editMessageText(`<b>Deleted package ${id}</b>`, html);
      await ctx.answerCallbackQuery({ text: `Deleted package ${id}.` });
      log("ok", { packageId: id.toString() });
    } catch (err) {
      const failure = explain(err);
      logFailure(logger, options.token, { ...fields, packageId: id.toString() }, err, failure);
      await ctx.editMessageText(escapeHtml(failure.text), html);
      await ctx.answerCallbackQuery({ text: failure.text });
      log(failure.outcome, { packageId: id.toString() });
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

interface PendingDelete {
  packageId: bigint;
  /** Only this user may answer. */
  userId: number;
  chatId: number;
  expiresAt: number;
}

// Bounds the memory a flood of /delete commands can take; the oldest question goes first.
const maxPendingConfirmations = 1000;

/**
 * Open /delete questions, keyed by a random key in the buttons' callback data, so
 * that a button cannot be forged for another package or another user. In memory:
 * a restart voids them (the user sends /delete again).
 */
class Confirmations {
  private readonly pending = new Map<string, PendingDelete>();

  constructor(private readonly timeoutMs: number) {}

  open(what: Omit<PendingDelete, "expiresAt">): string {
    const now = Date.now();
    for (const [key, p] of this.pending) if (p.expiresAt <= now) this.pending.delete(key);
    if (this.pending.size >= maxPendingConfirmations) this.pending.delete(this.pending.keys().next().value!);
    // 96 random bits in 16 characters: callback data holds at most 64 bytes.
    const key = randomBytes(12).toString("base64url");
    this.pending.set(key, { ...what, expiresAt: now + this.timeoutMs });
    return key;
  }

  /** The question behind `key`, expired or not (an expired one is still named to its user). */
  find(key: string): { pending: PendingDelete; expired: boolean } | undefined {
    const pending = this.pending.get(key);
    return pending === undefined ? undefined : { pending, expired: pending.expiresAt <= Date.now() };
  }

  /** One answer per question: closed before the delete runs, so a second tap deletes nothing. */
  close(key: string): void {
    this.pending.delete(key);
  }
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
  outcome: "rejected" | "invalid_argument" | "unavailable" | "unauthorised" | "failed";
}

/** What the user is told. Only messages written for users pass through: bot input errors and the API's InvalidArgument. */
export function explain(err: unknown): Failure {
  if (err instanceof UserError) return { text: err.message, outcome: "rejected" };
  if (err instanceof ConnectError) {
    switch (err.code) {
      case Code.InvalidArgument:
        // The API names the field and the rule, e.g. "Title must be 1 to 32 characters long (got 40)".
        return { text: `Not accepted: ${err.rawMessage}`, outcome: "invalid_argument" };
      // The bot's own API token (bot.apiToken) is missing, unknown or its role too low.
      case Code.Unauthenticated:
        return {
          text: "Sorry, the package service did not accept this bot's credentials. Tell the bot's operator.",
          outcome: "unauthorised",
        };
      case Code.PermissionDenied:
        return {
          text: "Sorry, this bot's own access to the package service does not allow that. Tell the bot's operator.",
          outcome: "unauthorised",
        };
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

function logFailure(
  logger: Logger,
  token: string,
  fields: Record<string, unknown>,
  err: unknown,
  failure: Failure,
): void {
  if (failure.outcome === "rejected" || failure.outcome === "invalid_argument") {
    logger.info({ ...fields, reason: failure.text }, "command rejected");
  } else if (err instanceof ConnectError) {
    const level = failure.outcome === "unavailable" ? "warn" : "error";
    logger[level](
      { ...fields, code: Code[err.code], error: err.rawMessage, cause: err.cause },
      "package service call failed",
    );
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
  if (err instanceof Error)
    return { type: err.name, message: redact(err.message), stack: err.stack && redact(err.stack) };
  return { type: typeof err, message: redact(String(err)) };
}
