import http from "node:http";
import type { AddressInfo } from "node:net";

// A small local stand-in for the Telegram Bot API (https://core.telegram.org/bots/api),
// enough for grammY's long polling: getMe, deleteWebhook, setMyCommands,
// getUpdates, sendMessage, editMessageText, answerCallbackQuery. It records every
// call, keeps the bot's messages per chat (edits change them, like Telegram), and
// tells when the bot has finished an update: grammY handles updates one at a time
// and asks for the next ones (offset > id) only after the handler has returned.

export interface ApiCall {
  method: string;
  token: string;
  params: Record<string, any>;
  /** Update id being handled when the call arrived (the last one delivered). */
  duringUpdate: number | undefined;
}

export interface BotMessage {
  message_id: number;
  chat: { id: number; type: string };
  text: string;
  parse_mode?: string;
  reply_markup?: { inline_keyboard: { text: string; callback_data?: string }[][] };
}

interface Waiter {
  updateId: number;
  resolve: () => void;
}

export interface UpdateResult {
  updateId: number;
  /** The bot's calls while it handled this update, in order (getUpdates left out). */
  calls: ApiCall[];
  /** Texts of sendMessage calls. */
  replies: string[];
  /** How long the bot took, from delivery to asking for the next update. */
  handledInMs: number;
}

export interface InjectOptions {
  /** How long to wait for the bot to finish the update. */
  timeoutMs?: number;
  /** Reuse a message id: Telegram delivering the same message again (the bot stopped before confirming it). */
  messageId?: number;
  /** The sender's user id; defaults to the chat id (a private chat). */
  from?: number;
  /** The sender's @username (without @); Telegram leaves it out for users without one. */
  username?: string;
}

export interface InjectedUpdate {
  updateId: number;
  /** Resolves when a getUpdates answer carried the update to the bot. */
  delivered: Promise<void>;
  result: Promise<UpdateResult>;
}

export const botUser = { id: 777000111, is_bot: true, first_name: "Package Bot", username: "package_test_bot" };

export class FakeTelegram {
  readonly calls: ApiCall[] = [];
  /** Bot messages by chat id, as they are now (after edits). */
  readonly chats = new Map<number, BotMessage[]>();
  /** When set, getUpdates fails with it (409: another process polls with the token). */
  getUpdatesError: { code: number; description: string } | undefined;
  private readonly queue: Record<string, unknown>[] = [];
  private nextUpdateId = 1;
  private nextMessageId = 1000;
  private confirmedBelow = 0;
  private deliveredUpTo: number | undefined;
  private readonly processedWaiters: Waiter[] = [];
  private pollWakers: (() => void)[] = [];
  private readonly deliveredAt = new Map<number, number>();
  private readonly deliveryWaiters = new Map<number, () => void>();

  private constructor(
    private readonly server: http.Server,
    readonly token: string,
    /** How long an empty getUpdates waits (at most its own timeout) before answering []. */
    private readonly maxPollWaitMs: number,
  ) {}

  static async start(options: { token?: string; maxPollWaitMs?: number } = {}): Promise<FakeTelegram> {
    let fake: FakeTelegram | undefined;
    const server = http.createServer((req, res) => {
      void fake!.handle(req, res);
    });
    fake = new FakeTelegram(server, options.token ?? "123456:TEST-token_abc", options.maxPollWaitMs ?? 1000);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return fake;
  }

  get apiRoot(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  callsTo(method: string): ApiCall[] {
    return this.calls.filter((c) => c.method === method);
  }

  /**
   * A user writes `text` in chat `chatId` (by default a private chat: chat id = user id;
   * a negative id is a group, where `from` names the user). Resolves once the bot has handled it.
   */
  sendText(chatId: number, text: string, options: InjectOptions = {}): Promise<UpdateResult> {
    return this.inject(chatId, text, options).result;
  }

  /** Like sendText, but tells apart the moment the bot takes the update (`delivered`) from its end (`result`). */
  inject(
    chatId: number,
    text: string,
    { timeoutMs = 15_000, messageId, from = chatId, username }: InjectOptions = {},
  ): InjectedUpdate {
    const command = /^\/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?/.exec(text);
    const message = {
      message_id: messageId ?? this.nextMessageId++,
      date: Math.floor(Date.now() / 1000),
      chat:
        chatId < 0
          ? { id: chatId, type: "supergroup", title: "Test group" }
          : { id: chatId, type: "private", first_name: "Tester" },
      from: { id: from, is_bot: false, first_name: "Tester", ...(username !== undefined && { username }) },
      text,
      ...(command && { entities: [{ type: "bot_command", offset: 0, length: command[0].length }] }),
    };
    return this.deliver({ message }, timeoutMs);
  }

  /** A user (`from`, by default the private chat's user) presses an inline button with `data` under the bot's message. */
  async pressButton(
    chatId: number,
    messageId: number,
    data: string,
    { timeoutMs = 15_000, from = chatId }: { timeoutMs?: number; from?: number } = {},
  ): Promise<UpdateResult> {
    const message = this.chats.get(chatId)?.find((m) => m.message_id === messageId);
    if (message === undefined) throw new Error(`no bot message ${messageId} in chat ${chatId}`);
    const callbackQuery = {
      id: `cb${this.nextUpdateId}`,
      from: { id: from, is_bot: false, first_name: "Tester" },
      message: { ...message, date: Math.floor(Date.now() / 1000), from: botUser },
      chat_instance: `ci${chatId}`,
      data,
    };
    return this.deliver({ callback_query: callbackQuery }, timeoutMs).result;
  }

  /** The bot's message with this id, as it is now. */
  message(chatId: number, messageId: number): BotMessage {
    const message = this.chats.get(chatId)?.find((m) => m.message_id === messageId);
    if (message === undefined) throw new Error(`no bot message ${messageId} in chat ${chatId}`);
    return message;
  }

  /** Button labels and data of a message, row by row flattened. */
  buttons(chatId: number, messageId: number): { text: string; data: string }[] {
    const rows = this.message(chatId, messageId).reply_markup?.inline_keyboard ?? [];
    return rows.flat().map((b) => ({ text: b.text, data: b.callback_data ?? "" }));
  }

  async close(): Promise<void> {
    for (const wake of this.pollWakers) wake();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private deliver(payload: Record<string, unknown>, timeoutMs: number): InjectedUpdate {
    const updateId = this.nextUpdateId++;
    const delivered = new Promise<void>((resolve) => this.deliveryWaiters.set(updateId, resolve));
    return { updateId, delivered, result: this.handled(updateId, payload, timeoutMs) };
  }

  private async handled(updateId: number, payload: Record<string, unknown>, timeoutMs: number): Promise<UpdateResult> {
    const firstCall = this.calls.length;
    const processed = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the bot did not finish update ${updateId} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.processedWaiters.push({
        updateId,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
    this.queue.push({ update_id: updateId, ...payload });
    this.wakePollers();
    await processed;
    const calls = this.calls.slice(firstCall).filter((c) => c.duringUpdate === updateId && c.method !== "getUpdates");
    return {
      updateId,
      calls,
      replies: calls.filter((c) => c.method === "sendMessage").map((c) => String(c.params.text)),
      handledInMs: Date.now() - (this.deliveredAt.get(updateId) ?? Date.now()),
    };
  }

  private wakePollers(): void {
    const wakers = this.pollWakers;
    this.pollWakers = [];
    for (const wake of wakers) wake();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const match = /^\/bot([^/]+)\/([A-Za-z]+)$/.exec(new URL(req.url ?? "/", "http://x").pathname);
    const reply = (status: number, body: unknown) => {
      if (res.destroyed) return;
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (match === null) return reply(404, { ok: false, error_code: 404, description: "Not Found" });
    const [, token, method] = match as unknown as [string, string, string];
    const raw = Buffer.concat(chunks).toString("utf8");
    let params: Record<string, any> = {};
    if (raw !== "") {
      try {
        params = JSON.parse(raw) as Record<string, any>;
      } catch {
        return reply(400, { ok: false, error_code: 400, description: "Bad Request: body is not JSON" });
      }
    }
    this.calls.push({ method, token, params, duringUpdate: this.deliveredUpTo });
    if (token !== this.token) return reply(401, { ok: false, error_code: 401, description: "Unauthorized" });
    const ok = (result: unknown) => reply(200, { ok: true, result });
    const bad = (description: string) =>
      reply(400, { ok: false, error_code: 400, description: `Bad Request: ${description}` });

    switch (method) {
      case "getMe":
        return ok({
          ...botUser,
          can_join_groups: true,
          can_read_all_group_messages: false,
          supports_inline_queries: false,
        });
      case "deleteWebhook":
      case "setMyCommands":
        return ok(true);
      case "getUpdates":
        if (this.getUpdatesError !== undefined) {
          const { code, description } = this.getUpdatesError;
          return reply(code, { ok: false, error_code: code, description });
        }
        return ok(await this.getUpdates(params, res));
      case "sendMessage": {
        const chatId = Number(params.chat_id);
        if (typeof params.text !== "string" || params.text === "") return bad("message text is empty");
        const message: BotMessage = {
          message_id: this.nextMessageId++,
          chat: { id: chatId, type: chatId < 0 ? "supergroup" : "private" },
          text: params.text,
          ...(params.parse_mode !== undefined && { parse_mode: params.parse_mode }),
          ...(params.reply_markup !== undefined && { reply_markup: params.reply_markup }),
        };
        const list = this.chats.get(chatId) ?? [];
        list.push(message);
        this.chats.set(chatId, list);
        return ok({ ...message, date: Math.floor(Date.now() / 1000), from: botUser });
      }
      case "editMessageText": {
        const chatId = Number(params.chat_id);
        const message = this.chats.get(chatId)?.find((m) => m.message_id === Number(params.message_id));
        if (message === undefined) return bad("message to edit not found");
        const markup = params.reply_markup;
        if (message.text === params.text && JSON.stringify(message.reply_markup) === JSON.stringify(markup)) {
          return bad(
            "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
          );
        }
        message.text = String(params.text);
        // Like Telegram: an edit without reply_markup removes the buttons.
        if (markup === undefined) delete message.reply_markup;
        else message.reply_markup = markup;
        if (params.parse_mode !== undefined) message.parse_mode = params.parse_mode;
        return ok({ ...message, date: Math.floor(Date.now() / 1000), from: botUser });
      }
      case "answerCallbackQuery":
        return ok(true);
      default:
        return reply(404, { ok: false, error_code: 404, description: `Not Found: method ${method} is not faked` });
    }
  }

  private async getUpdates(params: Record<string, any>, res: http.ServerResponse): Promise<unknown[]> {
    const offset = Number(params.offset ?? 0);
    // Asking from `offset` confirms every earlier update: the bot is done with them.
    if (offset > this.confirmedBelow) this.confirmedBelow = offset;
    for (let i = this.processedWaiters.length - 1; i >= 0; i--) {
      const waiter = this.processedWaiters[i]!;
      if (waiter.updateId < offset) {
        this.processedWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
    while (this.queue.length > 0 && (this.queue[0]!.update_id as number) < offset) this.queue.shift();

    const limit = Number(params.limit ?? 100) || 100;
    const timeoutMs = Math.min(Number(params.timeout ?? 0) * 1000, this.maxPollWaitMs);
    if (this.queue.length === 0 && timeoutMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, timeoutMs);
        function done() {
          clearTimeout(timer);
          res.off("close", done);
          resolve();
        }
        this.pollWakers.push(done);
        // The bot aborted the poll (bot.stop()).
        res.on("close", done);
      });
    }
    const updates = this.queue.slice(0, limit);
    for (const u of updates) {
      const id = u.update_id as number;
      this.deliveredUpTo = id;
      if (!this.deliveredAt.has(id)) this.deliveredAt.set(id, Date.now());
      this.deliveryWaiters.get(id)?.();
      this.deliveryWaiters.delete(id);
    }
    return updates;
  }
}
