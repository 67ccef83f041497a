// The Telegram bot end to end: the real grpc-server (in-process, own database),
// the bot (in-process, as `npm run bot` wires it) and a local fake of the Bot API
// (test/helpers/fake-telegram.ts). What the user sees is checked in the fake's
// recorded calls; what changed is checked through a stock grpc-js client.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { TLSSocket } from "node:tls";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { type BotApp, startBotApp } from "../internal/app/start-bot.js";
import { ConfigError } from "../internal/config/config.js";
import { LogisticPackageApiService } from "../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import { createTestCa } from "./helpers/certs.js";
import { testConfig, writeConfigFile, writeTokensFile } from "./helpers/config.js";
import { count, createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { FakeTelegram, type UpdateResult } from "./helpers/fake-telegram.js";
import {
  createPackage as createPackageWith,
  grpc,
  type PackageApiClient,
  packageApiClient,
  rpcError,
} from "./helpers/grpc-client.js";
import { type CapturedLogs, captureLogs } from "./helpers/logs.js";
import { poll } from "./helpers/poll.js";
import { freePort } from "./helpers/ports.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

// Private chats: chat id = user id. The main chat's user is an admin.
const chat = 4242;
const strangerChat = 999;
const readerUser = 5001;
const writerUser = 5002;
const otherAdmin = 5003;
const unlistedUser = 5004;
const group = -1001234567890;
const unavailable = /the package service is unavailable, try again later/i;

let db: TestDatabase;
let server: TestServer;
let client: PackageApiClient;
let fake: FakeTelegram;
let bot: RunningBot;

interface RunningBot {
  app: BotApp;
  logs: CapturedLogs;
  pollingFailures: unknown[];
}

async function startBot(
  telegram: FakeTelegram,
  settings: {
    grpcAddress: string;
    requestTimeoutMs?: number;
    deleteConfirmTimeoutMs?: number;
    token?: string;
    env?: Record<string, string>;
  },
): Promise<RunningBot> {
  const config = testConfig(
    {
      TELEGRAM_BOT_TOKEN: settings.token ?? telegram.token,
      TELEGRAM_ALLOWED_CHAT_IDS: `${chat}, ${group}, ${readerUser}, ${writerUser}, ${otherAdmin}, ${unlistedUser}`,
      TELEGRAM_USERS: `${chat}:admin, ${readerUser}:reader, ${writerUser}:writer, ${otherAdmin}:admin`,
      BOT_GRPC_ADDRESS: settings.grpcAddress,
      // This file checks the bot without Redis and Kafka (test/bot-cache.test.ts has them).
      BOT_KAFKA_ENABLED: "false",
      BOT_METRICS_PORT: "0",
      ...settings.env,
    },
    {
      bot: {
        apiRoot: telegram.apiRoot,
        ...(settings.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: settings.requestTimeoutMs }),
        ...(settings.deleteConfirmTimeoutMs === undefined
          ? {}
          : { deleteConfirmTimeoutMs: settings.deleteConfirmTimeoutMs }),
      },
    },
  );
  const logs = captureLogs("info");
  const pollingFailures: unknown[] = [];
  const app = await startBotApp(config, logs.logger, { onPollingFailed: (err) => pollingFailures.push(err) });
  return { app, logs, pollingFailures };
}

/** Requests the grpc-server has answered so far (one log line each). */
function apiRequests(): number {
  return server.logs.lines.filter((l) => l.msg === "request finished" || l.msg === "request failed").length;
}

function onlyReply(result: UpdateResult): string {
  assert.equal(result.replies.length, 1, `one reply, got ${JSON.stringify(result.replies)}`);
  const send = result.calls.find((c) => c.method === "sendMessage")!;
  assert.equal(send.params.chat_id, chat);
  return result.replies[0]!;
}

async function say(text: string): Promise<string> {
  return onlyReply(await fake.sendText(chat, text));
}

const createPackage = (fields: Record<string, unknown> = {}) => createPackageWith(client, fields);

async function describePackage(id: string): Promise<Record<string, any>> {
  return (await client.describePackageV1({ PackageID: id })).Value as Record<string, any>;
}

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db.url);
  client = packageApiClient(server.grpcAddress);
  fake = await FakeTelegram.start();
  bot = await startBot(fake, { grpcAddress: server.grpcAddress });
});

after(async () => {
  const started = Date.now();
  await bot?.app.stop();
  const stopMs = Date.now() - started;
  await fake?.close();
  client?.close();
  await server?.stop();
  await db?.drop();
  // Far below a long poll's wait, loose for a loaded machine.
  assert.ok(stopMs < 10_000, `the bot stops promptly (${stopMs} ms)`);
  const errors = bot?.logs.lines.filter((l) => l.level === "error" || l.level === "fatal") ?? [];
  assert.deepEqual(errors, [], "the bot logged no errors in the happy and user-error paths");
});

test("start-up: getMe, the command menu, deleteWebhook, then long polling", async () => {
  await poll(
    "the first getUpdates",
    () => fake.callsTo("getUpdates").length,
    (n) => n > 0,
    10_000,
    20,
  );
  const methods = fake.calls.map((c) => c.method);
  assert.deepEqual(methods.slice(0, 4), ["getMe", "setMyCommands", "deleteWebhook", "getUpdates"]);
  assert.deepEqual(fake.callsTo("getUpdates")[0]!.params.allowed_updates, ["message", "callback_query"]);
  const menu = fake.callsTo("setMyCommands")[0]!.params.commands as { command: string }[];
  assert.deepEqual(menu.map((c) => c.command).sort(), ["delete", "edit", "get", "help", "list", "new"]);
  assert.equal(bot.app.username, "package_test_bot");
  assert.deepEqual(bot.pollingFailures, []);
});

test("/help and /start explain every command with examples", async () => {
  for (const text of ["/help", "/start"]) {
    const reply = await say(text);
    for (const cmd of [
      "/list",
      "/get ID",
      "/new title | material | volume | reusable",
      "/edit ID field=value",
      "/delete ID",
    ]) {
      assert.ok(reply.includes(cmd), `${text} mentions ${cmd}`);
    }
    assert.match(reply, /title=&quot;Big box&quot;|title="Big box"/);
  }
});

describe("commands change and read the real API", () => {
  test("/new creates a package with the given fields", async () => {
    const before = await count(db.db, "package");
    const reply = await say("/new Big box | cardboard | 1200 | yes");
    const id = /Created package (\d+)/.exec(reply)?.[1];
    assert.ok(id, reply);
    assert.match(reply, /Title: Big box\nMaterial: cardboard\nVolume: 1200 cm³\nReusable: yes/);
    assert.equal(await count(db.db, "package"), before + 1);
    const pkg = await describePackage(id);
    assert.deepEqual([pkg.Title, pkg.Material, pkg.MaximumVolume, pkg.Reusable], ["Big box", "cardboard", 1200, true]);

    // reusable may be left out (= no); a decimal comma is a decimal point.
    const second = /Created package (\d+)/.exec(await say("/new Crate | plastic | 2,5"))?.[1];
    assert.ok(second);
    const crate = await describePackage(second);
    assert.deepEqual([crate.Title, crate.MaximumVolume, crate.Reusable], ["Crate", 2.5, false]);
  });

  test("/new delivered twice (Telegram redelivers after a crash) creates one package", async () => {
    const before = await count(db.db, "package");
    const first = await fake.sendText(chat, "/new Once | paper | 10", { messageId: 555001 });
    const again = await fake.sendText(chat, "/new Once | paper | 10", { messageId: 555001 });
    const id = /Created package (\d+)/.exec(onlyReply(first))?.[1];
    assert.ok(id);
    assert.equal(/Created package (\d+)/.exec(onlyReply(again))?.[1], id, "the same package both times");
    assert.equal(await count(db.db, "package"), before + 1);
  });

  test("/get shows the package, with the user's text escaped for HTML", async () => {
    const id = await createPackage({ Title: "<Tom & Jerry>", Material: "a<b>", MaximumVolume: 2.2, Reusable: false });
    const result = await fake.sendText(chat, `/get ${id}`);
    const reply = onlyReply(result);
    assert.equal(result.calls.find((c) => c.method === "sendMessage")!.params.parse_mode, "HTML");
    assert.ok(reply.startsWith(`<b>Package ${id}</b>`), reply);
    assert.match(reply, /Title: &lt;Tom &amp; Jerry&gt;\nMaterial: a&lt;b&gt;\n/);
    assert.match(reply, /Volume: 2\.2 cm³/, "a float32 volume prints as typed, not 2.2000000476837");
    assert.match(reply, /Reusable: no\nCreated: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);

    // Addressed to this bot by name, as in group chats.
    assert.ok((await say(`/get@package_test_bot ${id}`)).startsWith(`<b>Package ${id}</b>`));
  });

  test("/edit changes only the named fields, quoted values keep their spaces", async () => {
    const id = await createPackage({ Title: "old", Material: "paper", MaximumVolume: 1, Reusable: false });
    const reply = await say(`/edit ${id} title="Big box" volume=3.5 reusable=yes`);
    assert.ok(reply.startsWith(`<b>Updated package ${id}</b>`), reply);
    assert.match(reply, /Title: Big box\nMaterial: paper\nVolume: 3\.5 cm³\nReusable: yes\n/);
    assert.match(reply, /Updated: \d{4}-/);
    let pkg = await describePackage(id);
    assert.deepEqual([pkg.Title, pkg.Material, pkg.MaximumVolume, pkg.Reusable], ["Big box", "paper", 3.5, true]);
    assert.ok(pkg.Updated?.Time, "Updated is set");

    // Phones type “curly” quotes; reusable=no must reach the API (a wrapper, not a zero value).
    await say(`/edit ${id} material=“corrugated board” reusable=no`);
    pkg = await describePackage(id);
    assert.deepEqual([pkg.Title, pkg.Material, pkg.Reusable], ["Big box", "corrugated board", false]);
  });

  test("/delete asks Yes/No first; Yes removes the package", async () => {
    const id = await createPackage({ Title: "to go", Material: "paper", MaximumVolume: 3 });
    const question = await fake.sendText(chat, `/delete ${id}`);
    assert.equal(
      onlyReply(question),
      `<b>Delete package ${id}?</b>\nto go · paper · 3 cm³\nOnly you can answer, within 60 s.`,
    );
    await describePackage(id); // still there while the question is open
    const messageId = fake.chats.get(chat)!.at(-1)!.message_id;
    const [yes, no] = fake.buttons(chat, messageId);
    assert.equal(yes!.text, "Yes, delete");
    assert.equal(no!.text, "No");

    const answer = await fake.pressButton(chat, messageId, yes!.data);
    assert.deepEqual(answer.replies, [], "the question itself is edited");
    assert.equal(fake.message(chat, messageId).text, `<b>Deleted package ${id}</b>`);
    assert.deepEqual(fake.buttons(chat, messageId), [], "the buttons are gone");
    await rpcError(client.describePackageV1({ PackageID: id }), grpc.status.NOT_FOUND);

    // One answer per question: pressing Yes again (a double tap) does nothing more.
    const requestsBefore = apiRequests();
    const again = await fake.pressButton(chat, messageId, yes!.data);
    assert.match(String(again.calls.find((c) => c.method === "answerCallbackQuery")!.params.text), /no longer valid/);
    assert.equal(apiRequests(), requestsBefore);
  });
});

test("/list pages through 12 packages with Prev/Next buttons that edit the same message", async () => {
  // Only this test's packages: remove what earlier tests created.
  const existing = (await client.listPackagesV1({ Offset: 0, Limit: 500 })).Packages as { ID: string }[];
  for (const p of existing) await client.removePackageV1({ PackageID: p.ID });
  const ids: string[] = [];
  for (let i = 1; i <= 12; i++) ids.push(await createPackage({ Title: `p${String(i).padStart(2, "0")}` }));
  const titlesIn = (text: string) => [...text.matchAll(/ · (p\d\d) · /g)].map((m) => m[1]);
  const pageTitles = (from: number, to: number) =>
    Array.from({ length: to - from + 1 }, (_, i) => `p${String(from + i).padStart(2, "0")}`);

  const first = await fake.sendText(chat, "/list");
  onlyReply(first);
  const messageId = fake.chats.get(chat)!.at(-1)!.message_id;
  const message = () => fake.message(chat, messageId);
  assert.deepEqual(titlesIn(message().text), pageTitles(1, 5));
  assert.match(message().text, /^<b>Packages 1–5<\/b>/);
  assert.ok(message().text.includes(`<b>${ids[0]}</b> · p01 · cardboard · 2.5 cm³`), message().text);
  assert.deepEqual(fake.buttons(chat, messageId), [{ text: "Next ▶", data: "list:5" }], "no Prev on the first page");

  const press = async (data: string) => {
    const result = await fake.pressButton(chat, messageId, data);
    assert.deepEqual(result.replies, [], "paging sends no new message");
    assert.equal(
      result.calls.filter((c) => c.method === "answerCallbackQuery").length,
      1,
      "the button press is answered",
    );
    return result;
  };

  const second = await press("list:5");
  const edit = second.calls.find((c) => c.method === "editMessageText")!;
  assert.equal(edit.params.message_id, messageId, "Next edits the same message");
  assert.deepEqual(titlesIn(message().text), pageTitles(6, 10));
  assert.deepEqual(fake.buttons(chat, messageId), [
    { text: "◀ Prev", data: "list:0" },
    { text: "Next ▶", data: "list:10" },
  ]);

  await press("list:10");
  assert.deepEqual(titlesIn(message().text), pageTitles(11, 12));
  assert.deepEqual(fake.buttons(chat, messageId), [{ text: "◀ Prev", data: "list:5" }], "no Next on the last page");

  await press("list:5");
  assert.deepEqual(titlesIn(message().text), pageTitles(6, 10));

  // A second tap on the same page: Telegram answers "message is not modified"; the bot stays quiet.
  const again = await press("list:5");
  assert.equal(again.calls.filter((c) => c.method === "answerCallbackQuery")[0]!.params.text, undefined);
  assert.ok(!bot.logs.lines.some((l) => l.msg === "update handling failed" || l.msg === "command failed"));

  // Every press reads fresh: with exactly 10 packages left, page 2 is the last one.
  await client.removePackageV1({ PackageID: ids[10] });
  await client.removePackageV1({ PackageID: ids[11] });
  await press("list:5");
  assert.deepEqual(fake.buttons(chat, messageId), [{ text: "◀ Prev", data: "list:0" }]);

  await press("list:0");
  assert.deepEqual(titlesIn(message().text), pageTitles(1, 5));
  assert.deepEqual(fake.buttons(chat, messageId), [{ text: "Next ▶", data: "list:5" }]);
});

test("malformed input is answered by the bot, before any API call", async () => {
  const cases: [string, RegExp][] = [
    ["/get", /Which package\? Usage: \/get ID/],
    ["/get abc", /"abc" is not a package ID/],
    ["/get 0", /"0" is not a package ID/],
    ["/get 99999999999999999999", /IDs are between 1 and 9223372036854775807/],
    ["/delete -3", /"-3" is not a package ID/],
    ["/new only a title", /3 or 4 parts separated by "\|"/],
    ["/new Box | wood | big | yes", /"big" is not a number/],
    ["/new Box | wood | 0", /Volume must be greater than 0/],
    ["/new Box | wood | 2 | maybe", /"maybe" is not yes or no/],
    ["/edit 5 colour=red", /Unknown field "colour": the fields are title, material, volume, reusable/],
    ["/edit 5 volume=abc", /"abc" is not a number/],
    ["/edit 5 volume=0", /Volume must be greater than 0/],
    ['/edit 5 title="Big box', /no closing quote/],
    ["/edit 5", /Nothing to change/],
    ["/edit 5 title", /Expected field=value, got "title"/],
    ["/edit 5 title=", /Field title needs a value/],
    ["/edit 5 title=a title=b", /Field title is given twice/],
    ["/edit x title=a", /"x" is not a package ID/],
  ];
  const requestsBefore = apiRequests();
  for (const [input, expected] of cases) {
    const reply = await say(input);
    assert.match(reply.replaceAll("&quot;", '"'), expected, `reply to ${input}`);
  }
  // User text inside an error is escaped too.
  assert.match(await say("/get <b>"), /"&lt;b&gt;" is not a package ID/);
  assert.equal(apiRequests(), requestsBefore, "no API call for input the bot rejects");
});

test("InvalidArgument from the API is shown with its message, which names the field", async () => {
  const before = await count(db.db, "package");
  const longTitle = "x".repeat(40);
  assert.match(await say(`/new ${longTitle} | wood | 3 | no`), /Title must be 1 to 32 characters long \(got 40\)/);
  assert.match(await say("/new Box |  | 3"), /Material must be 1 to 32 characters long \(got 0\)/);
  assert.equal(await count(db.db, "package"), before, "nothing created");

  const id = await createPackage({ Title: "keep" });
  assert.match(await say(`/edit ${id} title=${longTitle}`), /Title must be at most 32 characters long \(got 40\)/);
  assert.equal((await describePackage(id)).Title, "keep");
});

test('NotFound: "package N not found" for get, edit and delete', async () => {
  for (const input of ["/get 987654321", "/edit 987654321 title=ghost", "/delete 987654321"]) {
    assert.equal(await say(input), "Package 987654321 not found.");
  }
  const id = await createPackage();
  await client.removePackageV1({ PackageID: id });
  assert.equal(await say(`/get ${id}`), `Package ${id} not found.`);
});

test("unknown commands and plain text get a pointer to /help", async () => {
  assert.match(await say("/frobnicate"), /Unknown command\. Send \/help/);
  assert.match(await say("hello"), /Send \/help/);
});

test('a chat that is not allowed gets "not allowed" and nothing else: no API call', async () => {
  const requestsBefore = apiRequests();
  for (const text of ["/list", "/get 1", "/new a | b | 1", "hello"]) {
    const result = await fake.sendText(strangerChat, text);
    assert.deepEqual(
      result.calls.map((c) => [c.method, c.params.chat_id]),
      [["sendMessage", strangerChat]],
    );
    assert.match(result.replies[0]!, /not allowed/);
  }
  // A button press from that chat (on the bot's reply there) is refused the same way.
  const messageId = fake.chats.get(strangerChat)!.at(-1)!.message_id;
  const press = await fake.pressButton(strangerChat, messageId, "list:5");
  assert.deepEqual(
    press.calls.map((c) => c.method),
    ["answerCallbackQuery"],
  );
  assert.match(String(press.calls[0]!.params.text), /not allowed/);
  assert.equal(apiRequests(), requestsBefore, "no API call for a stranger");
  assert.ok(
    bot.logs.lines.some((l) => l.msg === "update from a chat that is not allowed" && l.chatId === strangerChat),
  );
});

/** The one reply to `text` sent by `user` in their private chat. */
async function sayAs(user: number, text: string): Promise<string> {
  const result = await fake.sendText(user, text);
  assert.equal(result.replies.length, 1, `one reply, got ${JSON.stringify(result.replies)}`);
  return result.replies[0]!;
}

describe("roles: each Telegram user may do what their role allows", () => {
  test("a reader may /list and /get, and is refused /new, /edit and /delete with nothing changed", async () => {
    const id = await createPackage({ Title: "reader's" });
    assert.ok((await sayAs(readerUser, `/get ${id}`)).startsWith(`<b>Package ${id}</b>`));
    assert.match(await sayAs(readerUser, "/list"), /<b>Packages 1–/);
    assert.match(await sayAs(readerUser, "/help"), /Your role: <b>reader<\/b>/);

    const packagesBefore = await count(db.db, "package");
    const requestsBefore = apiRequests();
    assert.equal(
      await sayAs(readerUser, "/new a | b | 1"),
      "Sorry, /new needs the writer role; yours is reader. Ask the bot's operator.",
    );
    assert.equal(
      await sayAs(readerUser, `/edit ${id} title=x`),
      "Sorry, /edit needs the writer role; yours is reader. Ask the bot's operator.",
    );
    assert.equal(
      await sayAs(readerUser, `/delete ${id}`),
      "Sorry, /delete needs the admin role; yours is reader. Ask the bot's operator.",
    );
    assert.equal(apiRequests(), requestsBefore, "no API call for a refused command");
    assert.equal(await count(db.db, "package"), packagesBefore);
    assert.equal((await describePackage(id)).Title, "reader's");
    assert.ok(
      bot.logs.lines.some((l) => l.command === "delete" && l.userId === readerUser && l.outcome === "forbidden"),
      "the refusal is logged with the user",
    );
  });

  test("a writer may /new and /edit, and is refused /delete", async () => {
    const created = /Created package (\d+)/.exec(await sayAs(writerUser, "/new Writer box | wood | 7"))?.[1];
    assert.ok(created, "the writer created a package");
    assert.equal((await describePackage(created)).Title, "Writer box");
    assert.ok(
      (await sayAs(writerUser, `/edit ${created} material=steel`)).startsWith(`<b>Updated package ${created}</b>`),
    );
    assert.equal((await describePackage(created)).Material, "steel");
    assert.match(await sayAs(writerUser, `/delete ${created}`), /\/delete needs the admin role; yours is writer/);
    await describePackage(created);
  });

  test("a user not on the list, even in an allowed chat, is told their id and nothing else", async () => {
    const requestsBefore = apiRequests();
    const inGroup = await fake.sendText(group, "/list", { from: unlistedUser });
    assert.deepEqual(
      inGroup.calls.map((c) => [c.method, c.params.chat_id]),
      [["sendMessage", group]],
    );
    assert.equal(
      inGroup.replies[0],
      `Sorry, you are not allowed to use this bot (your Telegram user id is ${unlistedUser}).`,
    );
    assert.match(await sayAs(unlistedUser, "/get 1"), /not allowed to use this bot \(your Telegram user id is 5004\)/);
    // A listed user in the same group is served.
    assert.match(onlyReplyOf(await fake.sendText(group, "/list", { from: readerUser })), /Packages 1–/);
    assert.equal(apiRequests(), requestsBefore + 1, "only the listed user's /list reached the API");
    assert.ok(
      bot.logs.lines.some((l) => l.msg === "update from a user who is not allowed" && l.userId === unlistedUser),
    );
  });
});

describe("/delete confirmation", () => {
  /** Admin `asker` sends /delete in `chatId`; returns the question's message id and its buttons. */
  async function ask(chatId: number, asker: number, id: string) {
    const result = await fake.sendText(chatId, `/delete ${id}`, { from: asker });
    assert.match(onlyReplyOf(result), new RegExp(`^<b>Delete package ${id}\\?</b>`));
    const messageId = fake.chats.get(chatId)!.at(-1)!.message_id;
    const [yes, no] = fake.buttons(chatId, messageId).map((b) => b.data);
    return { messageId, yes: yes!, no: no! };
  }

  test("No keeps the package", async () => {
    const id = await createPackage({ Title: "keep me" });
    const { messageId, no } = await ask(chat, chat, id);
    const requestsBefore = apiRequests();
    await fake.pressButton(chat, messageId, no);
    assert.equal(fake.message(chat, messageId).text, `Kept package ${id}: nothing deleted.`);
    assert.deepEqual(fake.buttons(chat, messageId), []);
    assert.equal(apiRequests(), requestsBefore, "No calls nothing");
    assert.equal((await describePackage(id)).Title, "keep me");
  });

  test("in a group, only the admin who asked can answer; others are told so and nothing is deleted", async () => {
    const id = await createPackage({ Title: "group's" });
    const { messageId, yes } = await ask(group, chat, id);
    const question = fake.message(group, messageId).text;

    for (const presser of [otherAdmin, readerUser]) {
      const press = await fake.pressButton(group, messageId, yes, { from: presser });
      assert.deepEqual(
        press.calls.map((c) => c.method),
        ["answerCallbackQuery"],
        "no edit, no API call",
      );
      assert.equal(press.calls[0]!.params.text, "Only the user who sent this /delete can answer it.");
      assert.equal(press.calls[0]!.params.show_alert, true);
    }
    const stranger = await fake.pressButton(group, messageId, yes, { from: unlistedUser });
    assert.match(String(stranger.calls[0]!.params.text), /not allowed to use this bot/);
    assert.equal((await describePackage(id)).Title, "group's", "still there");
    assert.equal(fake.message(group, messageId).text, question, "the question is unchanged");
    assert.equal(fake.buttons(group, messageId).length, 2, "and still open for the asker");

    await fake.pressButton(group, messageId, yes, { from: chat });
    assert.equal(fake.message(group, messageId).text, `<b>Deleted package ${id}</b>`);
    await rpcError(client.describePackageV1({ PackageID: id }), grpc.status.NOT_FOUND);
  });

  test("a forged or unknown confirmation deletes nothing", async () => {
    const id = await createPackage();
    const { messageId } = await ask(chat, chat, id);
    const requestsBefore = apiRequests();
    const press = await fake.pressButton(chat, messageId, "delete:AAAAAAAAAAAAAAAA:yes");
    assert.match(String(press.calls[0]!.params.text), /no longer valid: send \/delete ID again/);
    assert.equal(apiRequests(), requestsBefore);
    await describePackage(id);
  });

  test("an expired confirmation deletes nothing", async () => {
    const telegram = await FakeTelegram.start();
    const quick = await startBot(telegram, { grpcAddress: server.grpcAddress, deleteConfirmTimeoutMs: 1000 });
    try {
      const id = await createPackage({ Title: "outlives it" });
      assert.match(onlyReplyOf(await telegram.sendText(chat, `/delete ${id}`)), /within 1 s/);
      const messageId = telegram.chats.get(chat)!.at(-1)!.message_id;
      const yes = telegram.buttons(chat, messageId)[0]!.data;
      await new Promise((r) => setTimeout(r, 1100));
      await telegram.pressButton(chat, messageId, yes);
      assert.equal(
        telegram.message(chat, messageId).text,
        `Package ${id} was not deleted: the confirmation expired. Send /delete ${id} again.`,
      );
      assert.equal((await describePackage(id)).Title, "outlives it");
    } finally {
      await quick.app.stop();
      await telegram.close();
    }
  });
});

describe("the package service cannot be reached", () => {
  test("a closed port: the user is told to try again later, at once", async () => {
    const closedPort = await freePort();
    const telegram = await FakeTelegram.start();
    const down = await startBot(telegram, { grpcAddress: `127.0.0.1:${closedPort}`, requestTimeoutMs: 1000 });
    try {
      for (const text of ["/get 1", "/list", "/new a | b | 1", "/edit 1 title=x", "/delete 1"]) {
        const result = await telegram.sendText(chat, text);
        assert.equal(result.replies.length, 1);
        assert.match(result.replies[0]!, unavailable);
        assert.doesNotMatch(result.replies[0]!, /Error|ECONNREFUSED|at .*\.ts/, "no raw error or stack trace");
        // Not left waiting: a bound of a few deadlines (1 s each), loose for a loaded machine.
        assert.ok(result.handledInMs < 5000, `answered without hanging (${result.handledInMs} ms)`);
      }
      const failures = down.logs.lines.filter((l) => l.msg === "package service call failed");
      assert.ok(failures.length >= 5);
      assert.equal(failures[0]!.code, "Unavailable");
      assert.equal(failures[0]!.level, "warn");
    } finally {
      await down.app.stop();
      await telegram.close();
    }
  });

  test("a service that never answers: the deadline (requestTimeoutMs) ends the wait", async () => {
    const sockets = new Set<net.Socket>();
    let received = 0;
    const blackHole = net.createServer((socket) => {
      sockets.add(socket);
      socket.on("data", (chunk) => (received += chunk.length));
      socket.on("error", () => {});
    });
    await new Promise<void>((resolve) => blackHole.listen(0, "127.0.0.1", resolve));
    const telegram = await FakeTelegram.start();
    let stopped = false;
    const slow = await startBot(telegram, {
      grpcAddress: `127.0.0.1:${(blackHole.address() as net.AddressInfo).port}`,
      requestTimeoutMs: 500,
    });
    try {
      const result = await telegram.sendText(chat, "/get 1");
      assert.match(onlyReplyOf(result), unavailable);
      // The 500 ms deadline ended it: not sooner, and not left to the black hole (loose for load).
      assert.ok(result.handledInMs >= 450 && result.handledInMs < 5000, `took ${result.handledInMs} ms`);
      assert.ok(slow.logs.lines.some((l) => l.msg === "package service call failed" && l.code === "DeadlineExceeded"));

      // Graceful stop while a command waits on the API: the command still gets its reply.
      const bytesBefore = received;
      const inFlight = telegram.inject(chat, "/get 2");
      await inFlight.delivered;
      // Taken (not only sent by the fake) once its API request reaches the black hole.
      await poll(
        "the bot to call the API for the command in hand",
        () => received,
        (bytes) => bytes > bytesBefore,
        10_000,
        5,
      );
      const stopStarted = Date.now();
      await slow.app.stop();
      stopped = true;
      const stopMs = Date.now() - stopStarted;
      await inFlight.result;
      const replies = telegram.callsTo("sendMessage").filter((c) => c.duringUpdate === inFlight.updateId);
      assert.equal(replies.length, 1, "the command in hand was answered before stop() returned");
      assert.match(String(replies[0]!.params.text), unavailable);
      assert.ok(stopMs < 10_000, `stop took ${stopMs} ms`);
    } finally {
      if (!stopped) await slow.app.stop();
      await telegram.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => blackHole.close(() => resolve()));
    }
  });
});

// The bot's side of TLS and tokens, against a server this test controls: a
// connect-node HTTP/2 TLS server asking for a client certificate, serving a stub of
// the API that answers only the bot's token (certificates made here with openssl).
describe("the bot's own credentials at the API: bearer token, TLS, client certificate", () => {
  const botApiToken = "bot-token-0123456789abcdef";
  let pki: Pki;
  let stub: StubApi;

  before(async () => {
    pki = makePki();
    stub = await startStubApi(pki, botApiToken);
  });
  after(async () => {
    await stub?.close();
  });

  const tlsEnv = () => ({
    BOT_API_TLS: "true",
    BOT_API_CA_FILE: pki.caFile,
    BOT_API_CERT_FILE: pki.clientCertFile,
    BOT_API_KEY_FILE: pki.clientKeyFile,
  });

  async function withBot(
    env: Record<string, string>,
    run: (telegram: FakeTelegram, running: RunningBot) => Promise<void>,
  ) {
    const telegram = await FakeTelegram.start();
    const running = await startBot(telegram, { grpcAddress: stub.address, requestTimeoutMs: 2000, env });
    try {
      await run(telegram, running);
    } finally {
      await running.app.stop();
      await telegram.close();
    }
  }

  test("over TLS with a private CA and a client certificate, every call carries the bot's token", async () => {
    await withBot({ ...tlsEnv(), BOT_API_TOKEN: botApiToken }, async (telegram, running) => {
      const callsBefore = stub.calls.length;
      assert.match(onlyReplyOf(await telegram.sendText(chat, "/get 7")), /^<b>Package 7<\/b>\nTitle: over TLS/);
      assert.match(onlyReplyOf(await telegram.sendText(chat, "/list")), /<b>7<\/b> · over TLS/);
      assert.deepEqual(
        stub.calls.slice(callsBefore).map((c) => [c.method, c.authorization]),
        [
          ["DescribePackageV1", `Bearer ${botApiToken}`],
          ["ListPackagesV1", `Bearer ${botApiToken}`],
        ],
      );
      const connection = stub.connections.at(-1)!;
      assert.deepEqual(connection, { alpn: "h2", clientCertificate: "package-bot", authorized: true });
      assert.ok(!JSON.stringify(running.logs.lines).includes(botApiToken), "the API token is not logged");
      assert.ok(running.logs.lines.some((l) => l.msg === "bot started" && l.apiTls === true && l.apiToken === true));
    });
  });

  test("a token the API refuses (or none): the user is told, the log names the code, not the token", async () => {
    for (const token of ["not-the-bot-token", ""]) {
      await withBot({ ...tlsEnv(), BOT_API_TOKEN: token }, async (telegram, running) => {
        const callsBefore = stub.calls.length;
        const reply = onlyReplyOf(await telegram.sendText(chat, "/get 7"));
        assert.equal(
          reply,
          "Sorry, the package service did not accept this bot's credentials. Tell the bot's operator.",
        );
        assert.equal(
          stub.calls[callsBefore]!.authorization,
          token === "" ? undefined : `Bearer ${token}`,
          "no header without a token",
        );
        const failure = running.logs.lines.find((l) => l.msg === "package service call failed")!;
        assert.equal(failure.code, "Unauthenticated");
        assert.equal(failure.level, "error");
        if (token !== "") assert.ok(!JSON.stringify(running.logs.lines).includes(token));
      });
    }
  });

  test("TLS that cannot be trusted fails closed: no call reaches the API", async () => {
    const cases: [string, Record<string, string>, RegExp][] = [
      // The stub's certificate comes from a private CA: the system CAs do not vouch for it.
      [
        "system CAs only",
        { BOT_API_TLS: "true", BOT_API_CERT_FILE: pki.clientCertFile, BOT_API_KEY_FILE: pki.clientKeyFile },
        /self-signed certificate/,
      ],
      // The server wants a client certificate.
      ["no client certificate", { BOT_API_TLS: "true", BOT_API_CA_FILE: pki.caFile }, /certificate required/],
      // Cleartext HTTP/2 to a TLS port.
      ["cleartext", {}, /./],
    ];
    for (const [name, env, logged] of cases) {
      await withBot({ ...env, BOT_API_TOKEN: botApiToken }, async (telegram, running) => {
        const callsBefore = stub.calls.length;
        const reply = onlyReplyOf(await telegram.sendText(chat, "/get 7"));
        assert.match(reply, /^Sorry, the package service (is unavailable|could not do that)/, name);
        assert.equal(stub.calls.length, callsBefore, `${name}: no call reached the API`);
        const failure = running.logs.lines.find((l) => l.msg === "package service call failed");
        assert.match(String(failure?.error), logged, `${name}: the log says why`);
        assert.ok(!JSON.stringify(running.logs.lines).includes(botApiToken), `${name}: the token is not logged`);
      });
    }
  });

  test("a CA, certificate or key file that cannot be used stops start-up naming its key", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lpa-bot-pem-"));
    const notPem = join(dir, "not.pem");
    writeFileSync(notPem, "hello\n");
    const cases: [Record<string, string>, RegExp][] = [
      [
        { BOT_API_CA_FILE: join(dir, "missing.pem") },
        /config key "bot\.apiCaFile" \(env BOT_API_CA_FILE\): cannot read .*missing\.pem/,
      ],
      [
        { BOT_API_CA_FILE: notPem },
        /config key "bot\.apiCaFile" \(env BOT_API_CA_FILE\): .*not\.pem is not a PEM certificate/,
      ],
      [
        { BOT_API_CERT_FILE: pki.clientCertFile, BOT_API_KEY_FILE: pki.caKeyFile },
        /"bot\.apiCertFile", "bot\.apiKeyFile".*not a matching PEM certificate and key/,
      ],
    ];
    for (const [env, pattern] of cases) {
      await assert.rejects(
        startBot(fake, { grpcAddress: stub.address, env: { BOT_API_TLS: "true", ...env } }),
        (err: unknown) => err instanceof ConfigError && pattern.test(err.message),
        JSON.stringify(env),
      );
    }
  });
});

// The whole chain as deployed securely: the real grpc-server with TLS_CERT_FILE,
// TLS_KEY_FILE, TLS_CLIENT_CA_FILE (mutual TLS) and AUTH_TOKENS_FILE; the bot with its
// own token, CA and client certificate.
describe("against the real grpc-server with TLS, mutual TLS and API tokens", () => {
  const tokens = {
    admin: "bot-admin-token-0123456789",
    writer: "bot-writer-token-0123456789",
    test: "test-admin-token-0123456789",
  };
  let pki: Pki;
  let secure: TestServer;
  let admin: PackageApiClient;

  before(async () => {
    pki = makePki();
    const tokensFile = writeTokensFile(mkdtempSync(join(tmpdir(), "lpa-bot-auth-")), [
      { name: "package-bot", token: tokens.admin, role: "admin" },
      { name: "writer-bot", token: tokens.writer, role: "writer" },
      { name: "test-admin", token: tokens.test, role: "admin" },
    ]);
    secure = await startTestServer(db.url, {
      TLS_CERT_FILE: pki.serverCertFile,
      TLS_KEY_FILE: pki.serverKeyFile,
      TLS_CLIENT_CA_FILE: pki.caFile,
      AUTH_TOKENS_FILE: tokensFile,
    });
    // The test's own view of the data, with its own admin token.
    const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${tokens.test}`);
      callback(null, metadata);
    });
    const channel = grpc.credentials.createSsl(
      readFileSync(pki.caFile),
      readFileSync(pki.clientKeyFile),
      readFileSync(pki.clientCertFile),
    );
    admin = packageApiClient(secure.grpcAddress, grpc.credentials.combineChannelCredentials(channel, bearer));
  });
  after(async () => {
    admin?.close();
    await secure?.stop();
  });

  const env = (token: string) => ({
    BOT_API_TOKEN: token,
    BOT_API_TLS: "true",
    BOT_API_CA_FILE: pki.caFile,
    BOT_API_CERT_FILE: pki.clientCertFile,
    BOT_API_KEY_FILE: pki.clientKeyFile,
  });

  async function withBot(token: string, run: (telegram: FakeTelegram) => Promise<void>) {
    const telegram = await FakeTelegram.start();
    const running = await startBot(telegram, { grpcAddress: secure.grpcAddress, env: env(token) });
    try {
      await run(telegram);
    } finally {
      await running.app.stop();
      await telegram.close();
    }
    // (An empty token has nothing to leak.)
    if (token !== "")
      assert.ok(!JSON.stringify(running.logs.lines).includes(token), "the bot's token is not in its logs");
  }

  /** The caller the server logged for each of its requests since `from`. */
  const callers = (from: number) =>
    secure.logs.lines
      .slice(from)
      .filter((l) => l.msg === "request finished")
      .map((l) => [l.method, l.caller, l.code]);

  test("with an admin token: /new, then /delete and Yes, each call made as package-bot", async () => {
    await withBot(tokens.admin, async (telegram) => {
      const logFrom = secure.logs.lines.length;
      const id = /Created package (\d+)/.exec(
        onlyReplyOf(await telegram.sendText(chat, "/new Secure box | steel | 4")),
      )?.[1];
      assert.ok(id, "created over TLS with the bot's token");
      assert.equal((await admin.describePackageV1({ PackageID: id })).Value.Title, "Secure box");

      assert.match(onlyReplyOf(await telegram.sendText(chat, `/delete ${id}`)), /Delete package \d+\?/);
      const messageId = telegram.chats.get(chat)!.at(-1)!.message_id;
      await telegram.pressButton(chat, messageId, telegram.buttons(chat, messageId)[0]!.data);
      assert.equal(telegram.message(chat, messageId).text, `<b>Deleted package ${id}</b>`);
      await rpcError(admin.describePackageV1({ PackageID: id }), grpc.status.NOT_FOUND);

      assert.deepEqual(
        callers(logFrom).filter(([, caller]) => caller === "package-bot"),
        [
          ["CreatePackageV1", "package-bot", "ok"],
          ["DescribePackageV1", "package-bot", "ok"],
          ["RemovePackageV1", "package-bot", "ok"],
        ],
      );
      assert.ok(!JSON.stringify(secure.logs.lines).includes(tokens.admin), "the server does not log the token either");
    });
  });

  test("with a writer token, Yes to /delete is refused by the API: the user is told, the package stays", async () => {
    const id = (await admin.createPackageV1({ Title: "stays", Material: "wood", MaximumVolume: 1, Reusable: false }))
      .ID as string;
    await withBot(tokens.writer, async (telegram) => {
      assert.match(onlyReplyOf(await telegram.sendText(chat, `/delete ${id}`)), /Delete package \d+\?/);
      const messageId = telegram.chats.get(chat)!.at(-1)!.message_id;
      await telegram.pressButton(chat, messageId, telegram.buttons(chat, messageId)[0]!.data);
      assert.equal(
        telegram.message(chat, messageId).text,
        "Sorry, this bot's own access to the package service does not allow that. Tell the bot's operator.",
      );
    });
    assert.equal((await admin.describePackageV1({ PackageID: id })).Value.Title, "stays");
  });

  test("without a token, or with an unknown one, the API refuses and the user is told", async () => {
    for (const token of ["", "not-a-known-token-0123456789"]) {
      await withBot(token, async (telegram) => {
        assert.equal(
          onlyReplyOf(await telegram.sendText(chat, "/list")),
          "Sorry, the package service did not accept this bot's credentials. Tell the bot's operator.",
        );
      });
    }
  });
});

test("a token that Telegram rejects stops start-up with a message naming bot.token", async () => {
  await assert.rejects(
    startBot(fake, { grpcAddress: server.grpcAddress, token: "42:wrong" }),
    (err: unknown) =>
      err instanceof ConfigError && /bot\.token/.test(err.message) && /TELEGRAM_BOT_TOKEN/.test(err.message),
  );
});

test("polling that Telegram ends (409: another instance) stops the bot and reports it, /live failing", async () => {
  const telegram = await FakeTelegram.start();
  const lone = await startBot(telegram, { grpcAddress: server.grpcAddress });
  const live = () => fetch(`http://127.0.0.1:${lone.app.ports.metrics}/live`).then((res) => res.status);
  try {
    assert.equal(await live(), 200);
    telegram.getUpdatesError = { code: 409, description: "Conflict: terminated by other getUpdates request" };
    await poll(
      "polling to fail",
      () => lone.pollingFailures.length,
      (n) => n > 0,
      10_000,
      20,
    );
    assert.equal(lone.pollingFailures.length, 1);
    assert.ok(lone.logs.lines.some((l) => l.level === "fatal" && l.msg === "polling failed: the bot stops"));
    // The process lives on (its status port answers), so /live is what gets it restarted.
    assert.equal(await live(), 503);
  } finally {
    await lone.app.stop();
    await telegram.close();
  }
});

test("the token never reaches the logs", () => {
  assert.ok(!JSON.stringify(bot.logs.lines).includes(fake.token));
});

describe("npm run bot (the binary)", () => {
  test("refuses to start without a token, naming the key", async () => {
    const run = await runBinary({ TELEGRAM_BOT_TOKEN: "" });
    assert.equal(run.code, 2, run.output);
    assert.match(
      run.output,
      /^bot: invalid configuration: config key "bot\.token" \(env TELEGRAM_BOT_TOKEN\) is empty/m,
    );
  });

  test("serves commands, and SIGTERM stops it gracefully (exit 0)", async () => {
    const telegram = await FakeTelegram.start();
    const config = await writeConfigFile({ bot: { apiRoot: telegram.apiRoot } });
    const id = await createPackage({ Title: "from the binary" });
    try {
      const run = runBinary(
        {
          CONFIG_PATH: config.path,
          TELEGRAM_BOT_TOKEN: telegram.token,
          TELEGRAM_ALLOWED_CHAT_IDS: String(chat),
          TELEGRAM_USERS: `${chat}:reader`,
          BOT_GRPC_ADDRESS: server.grpcAddress,
          LOG_LEVEL: "info",
        },
        { stopWhen: /"bot started"/ },
      );
      const started = await run.started;
      assert.ok(started, 'the binary logs "bot started"');
      const result = await telegram.sendText(chat, `/get ${id}`);
      assert.match(onlyReplyOf(result), /Title: from the binary/);
      run.child.kill("SIGTERM");
      const exit = await run;
      assert.equal(exit.code, 0, exit.output);
      assert.match(exit.output, /"shutting down"/);
      assert.match(exit.output, /"stopped"/);
      assert.ok(!exit.output.includes(telegram.token), "the token is not logged");
    } finally {
      await telegram.close();
      await config.cleanup();
    }
  });
});

interface Pki {
  caFile: string;
  caKeyFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
}

/** A private CA, a server certificate for 127.0.0.1 and a client certificate (CN package-bot). */
function makePki(): Pki {
  const ca = createTestCa("bot");
  const server = ca.issue("server");
  const client = ca.issue("package-bot", { client: true });
  return {
    caFile: ca.caFile,
    caKeyFile: join(ca.dir, "ca.key"),
    serverCertFile: server.certFile,
    serverKeyFile: server.keyFile,
    clientCertFile: client.certFile,
    clientKeyFile: client.keyFile,
  };
}

interface StubApi {
  address: string;
  /** Calls that reached the service, with their authorization header. */
  calls: { method: string; authorization: string | undefined }[];
  /** TLS connections accepted: the ALPN chosen and the client certificate's CN. */
  connections: { alpn: string | false | null; clientCertificate: string | undefined; authorized: boolean }[];
  close(): Promise<void>;
}

/** An HTTP/2 TLS server (client certificate required) with a stub of the API that answers only `token`. */
async function startStubApi(pki: Pki, token: string): Promise<StubApi> {
  const calls: StubApi["calls"] = [];
  const connections: StubApi["connections"] = [];
  const check = (method: string, ctx: HandlerContext) => {
    const authorization = ctx.requestHeader.get("authorization") ?? undefined;
    calls.push({ method, authorization });
    if (authorization !== `Bearer ${token}`) throw new ConnectError("missing or unknown token", Code.Unauthenticated);
  };
  const pkg = { ID: 7n, Title: "over TLS", Material: "steel", MaximumVolume: 2, Reusable: true };
  const handler = connectNodeAdapter({
    routes: (router) =>
      router.service(LogisticPackageApiService, {
        describePackageV1(_req, ctx) {
          check("DescribePackageV1", ctx);
          return { Value: pkg };
        },
        listPackagesV1(_req, ctx) {
          check("ListPackagesV1", ctx);
          return { Packages: [pkg] };
        },
      }),
  });
  const server = http2.createSecureServer(
    {
      cert: readFileSync(pki.serverCertFile),
      key: readFileSync(pki.serverKeyFile),
      ca: readFileSync(pki.caFile),
      requestCert: true,
      rejectUnauthorized: true,
    },
    handler,
  );
  server.on("secureConnection", (socket: TLSSocket) => {
    const peer = socket.getPeerCertificate();
    connections.push({
      alpn: socket.alpnProtocol,
      clientCertificate: peer.subject?.CN?.toString(),
      authorized: socket.authorized,
    });
  });
  // A refused handshake (the cases that must fail) is not the stub's error.
  server.on("tlsClientError", () => {});
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    calls,
    connections,
    async close() {
      for (const session of sessions) session.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function onlyReplyOf(result: UpdateResult): string {
  assert.equal(result.replies.length, 1, JSON.stringify(result.replies));
  return result.replies[0]!;
}

type BinaryRun = Promise<{ code: number | null; output: string }> & {
  child: ReturnType<typeof spawn>;
  started: Promise<boolean>;
};

/** Runs cmd/bot/main.ts; `started` resolves when the output matches stopWhen (or the process ends). */
function runBinary(env: Record<string, string>, options: { stopWhen?: RegExp } = {}): BinaryRun {
  const child = spawn(process.execPath, ["--import", "tsx", "cmd/bot/main.ts"], {
    env: { ...process.env, BOT_KAFKA_ENABLED: "false", BOT_METRICS_PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  let markStarted: (v: boolean) => void = () => {};
  const started = new Promise<boolean>((resolve) => (markStarted = resolve));
  const onData = (chunk: Buffer) => {
    output += chunk.toString("utf8");
    if (options.stopWhen?.test(output)) markStarted(true);
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const done = new Promise<{ code: number | null; output: string }>((resolve) => {
    child.on("close", (code) => {
      clearTimeout(timer);
      markStarted(false);
      resolve({ code, output });
    });
  });
  return Object.assign(done, { child, started });
}
