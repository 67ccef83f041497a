// The bot's Redis cache and Kafka topics, and the facade's message log, end to end:
// the real grpc-server and retranslator (own database), the local Kafka-protocol
// broker, the machine's Redis (keys under a prefix of this run, removed at the end),
// the bot as `npm run bot` wires it against the fake Bot API, and the facade.

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { after, before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Redis } from "ioredis";
import { type Consumer, Kafka, type KafkaMessage, logLevel } from "kafkajs";
import { type BotApp, startBotApp } from "../internal/app/start-bot.js";
import { PackageCache } from "../internal/bot/package-cache.js";
import type { Config } from "../internal/config/config.js";
import { PackageSchema } from "../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import { testConfig } from "./helpers/config.js";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { facadeEnv, readFacadeMetric, startTestFacade, type TestFacade } from "./helpers/facade.js";
import { FakeTelegram } from "./helpers/fake-telegram.js";
import { type PackageApiClient, packageApiClient } from "./helpers/grpc-client.js";
import { type KafkaMock, startKafkaMock } from "./helpers/kafka-mock.js";
import { type CapturedLogs, captureLogs } from "./helpers/logs.js";
import { poll } from "./helpers/poll.js";
import { freePort } from "./helpers/ports.js";
import { fastRetranslatorEnv, startTestRetranslator, type TestRetranslator } from "./helpers/retranslator.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const chat = 4242;
const packageTopic = "omp-package-events";
// The defaults of bot.kafka.commandsTopic and bot.kafka.cacheEventsTopic: the original's names.
const commandsTopic = "omp-tgbot-commands";
const cacheEventsTopic = "omp-tgbot-cache-events";
const keyPrefix = `lpa-test:${process.pid}:${Date.now()}:`;

let db: TestDatabase;
let facadeDb: TestDatabase;
let server: TestServer;
let client: PackageApiClient;
let mock: KafkaMock;
let retranslator: TestRetranslator;
let fake: FakeTelegram;
let bot: RunningBot;
let redis: Redis;
let watcher: TopicWatcher;

interface RunningBot {
  app: BotApp;
  logs: CapturedLogs;
  metricsUrl: string;
}

async function startBot(
  telegram: FakeTelegram,
  env: Record<string, string>,
  overrides: { kafka?: Partial<Config["bot"]["kafka"]> } = {},
): Promise<RunningBot> {
  const config = testConfig(
    {
      TELEGRAM_BOT_TOKEN: telegram.token,
      TELEGRAM_ALLOWED_CHAT_IDS: `${chat}`,
      TELEGRAM_USERS: `${chat}:admin`,
      BOT_GRPC_ADDRESS: server.grpcAddress,
      BOT_METRICS_PORT: "0",
      KAFKA_BROKERS: mock.brokers.join(","),
      ...env,
    },
    { bot: { apiRoot: telegram.apiRoot, cache: { keyPrefix }, ...(overrides.kafka && { kafka: overrides.kafka }) } },
  );
  const logs = captureLogs("info");
  const app = await startBotApp(config, logs.logger, { onPollingFailed: () => {} });
  return { app, logs, metricsUrl: `http://127.0.0.1:${app.ports.metrics}` };
}

/** Collects every message of some topics from their beginning. */
class TopicWatcher {
  readonly messages = new Map<string, KafkaMessage[]>();
  private constructor(private readonly consumer: Consumer) {}

  static async start(brokers: string[], topics: string[]): Promise<TopicWatcher> {
    const kafka = new Kafka({ clientId: "bot-cache-test", brokers, logLevel: logLevel.NOTHING });
    const consumer = kafka.consumer({
      groupId: `bot-cache-test-${process.pid}`,
      sessionTimeout: 10_000,
      heartbeatInterval: 1000,
    });
    const watcher = new TopicWatcher(consumer);
    for (const topic of topics) watcher.messages.set(topic, []);
    await consumer.connect();
    await consumer.subscribe({ topics, fromBeginning: true });
    await consumer.run({ eachMessage: async ({ topic, message }) => void watcher.messages.get(topic)!.push(message) });
    return watcher;
  }

  json(topic: string): Record<string, unknown>[] {
    return this.messages.get(topic)!.map((m) => JSON.parse(m.value!.toString("utf8")) as Record<string, unknown>);
  }

  stop(): Promise<void> {
    return this.consumer.disconnect();
  }
}

/** DescribePackageV1 calls the grpc-server has answered so far. */
function describeCalls(): number {
  return server.logs.lines.filter((l) => l.method === "DescribePackageV1" && typeof l.code === "string").length;
}

async function say(telegram: FakeTelegram, text: string): Promise<string> {
  const result = await telegram.sendText(chat, text);
  assert.equal(result.replies.length, 1, JSON.stringify(result.replies));
  return result.replies[0]!;
}

async function createPackage(title: string): Promise<string> {
  const res = await client.createPackageV1({
    Title: title,
    Material: "cardboard",
    MaximumVolume: 2.5,
    Reusable: false,
  });
  return res.ID as string;
}

/** Cache events for one package, in order. */
function cacheEventsOf(id: string): Record<string, unknown>[] {
  return watcher.json(cacheEventsTopic).filter((e) => String(e.id) === id);
}

async function metric(metricsUrl: string, name: string, labels = ""): Promise<number> {
  const text = await (await fetch(`${metricsUrl}/metrics`)).text();
  const m = new RegExp(`^${name}${labels.replace(/[{}]/g, "\\$&")} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

before(async () => {
  db = await createTestDatabase();
  facadeDb = await createTestDatabase();
  server = await startTestServer(db.url);
  client = packageApiClient(server.grpcAddress);
  mock = await startKafkaMock();
  // The test broker cannot create topics through the admin API (the bot logs that and relies on these).
  await mock.createTopic(packageTopic, 4);
  await mock.createTopic(commandsTopic, 2);
  await mock.createTopic(cacheEventsTopic, 2);
  retranslator = await startTestRetranslator(fastRetranslatorEnv(db.url, mock.brokers, packageTopic));
  watcher = await TopicWatcher.start(mock.brokers, [commandsTopic, cacheEventsTopic, packageTopic]);
  redis = new Redis("redis://127.0.0.1:6379", { lazyConnect: true });
  await redis.connect();
  fake = await FakeTelegram.start();
  bot = await startBot(fake, { REDIS_URL: "redis://127.0.0.1:6379", KAFKA_TOPIC: packageTopic });
  // The bot's package-event consumer has joined once a new package's Created event lands in the cache.
  await poll(
    "the bot's cache consumer to apply a package event",
    async () => {
      const id = await createPackage("warm-up");
      await new Promise((r) => setTimeout(r, 300));
      return redis.exists(`${keyPrefix}package:${id}`);
    },
    (n) => n === 1,
    60_000,
    0,
  );
});

after(async () => {
  await bot?.app.stop();
  await fake?.close();
  await watcher?.stop();
  await retranslator?.stop();
  client?.close();
  await server?.stop();
  await mock?.stop();
  if (redis !== undefined) {
    const keys = await redis.keys(`${keyPrefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  }
  await db?.drop();
  await facadeDb?.drop();
  const errors = bot?.logs.lines.filter((l) => l.level === "error" || l.level === "fatal") ?? [];
  assert.deepEqual(errors, [], "the bot logged no errors");
});

test("a second /get is served from Redis: a Read description event with success true, no second Describe", async () => {
  const id = await createPackage("cached box");
  const first = await say(fake, `/get ${id}`);
  assert.match(first, /cached box/);
  const calls = describeCalls();
  const second = await say(fake, `/get ${id}`);
  assert.equal(second, first, "the same answer");
  assert.equal(describeCalls(), calls, "the second /get did not call the API");
  await poll(
    "a Read description event with success true",
    async () => cacheEventsOf(id),
    (events) => events.some((e) => e.cacheEventType === "Read description" && e.success === true),
  );
  const event = cacheEventsOf(id).find((e) => e.cacheEventType === "Read description" && e.success === true)!;
  assert.deepEqual(Object.keys(event).sort(), ["cacheEventType", "id", "success", "timestamp"]);
  assert.equal(typeof event.id, "number");
  assert.ok(!Number.isNaN(Date.parse(String(event.timestamp))));
  assert.ok((await metric(bot.metricsUrl, "logistic_package_api_bot_cache_hits_total")) >= 1);
  // Namespaced key, with a TTL.
  const ttl = await redis.ttl(`${keyPrefix}package:${id}`);
  assert.ok(ttl > 0 && ttl <= 300, `TTL ${ttl}`);
});

test("a change made through the API, not the bot, reaches /get through the cache's events, long before the TTL", async () => {
  const id = await createPackage("before");
  assert.match(await say(fake, `/get ${id}`), /Title: before/);
  assert.match(await say(fake, `/get ${id}`), /Title: before/, "cached now");
  await client.updatePackageV1({ PackageID: id, Title: "after" });
  // Usually well under a second (outbox, relay, topic, the bot's consumer, Redis); the bound only
  // has to stay far below the entry's 300 s TTL, so that "after" can only have come by the event.
  const deadline = Date.now() + 15_000;
  let reply = "";
  while (Date.now() < deadline) {
    reply = await say(fake, `/get ${id}`);
    if (/Title: after/.test(reply)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(reply, /Title: after/, "the API's change reached the cache within 15 s");

  // A removal made elsewhere too: /get then says the package is gone.
  await client.removePackageV1({ PackageID: id });
  const removed = await poll(
    "/get of a package removed through the API",
    () => say(fake, `/get ${id}`),
    (r) => /not found/.test(r),
    15_000,
    50,
  );
  assert.equal(removed, `Package ${id} not found.`);
});

test("a duplicate of an old package event delivered again does not put the old state back", async () => {
  const id = await createPackage("first state");
  await client.updatePackageV1({ PackageID: id, Title: "second state" });
  await poll(
    "/get to show the second state",
    () => say(fake, `/get ${id}`),
    (r) => /Title: second state/.test(r),
    5000,
    50,
  );
  const created = await poll(
    "the Created event on the package topic",
    async () =>
      watcher.messages
        .get(packageTopic)!
        .find((m) => m.key?.toString() === id && m.headers?.["event-type"]?.toString() === "Created"),
    (m) => m !== undefined,
  );
  const staleBefore = await metric(
    bot.metricsUrl,
    "logistic_package_api_bot_package_events_total",
    '{outcome="stale"}',
  );
  // The retranslator after a crash: the same event, again, after the newer one.
  const producer = new Kafka({
    clientId: "bot-cache-test-dup",
    brokers: mock.brokers,
    logLevel: logLevel.NOTHING,
  }).producer();
  await producer.connect();
  await producer.send({
    topic: packageTopic,
    messages: [{ key: created!.key, value: created!.value, headers: created!.headers }],
  });
  await producer.disconnect();
  await poll(
    "the bot to take the duplicate as stale",
    () => metric(bot.metricsUrl, "logistic_package_api_bot_package_events_total", '{outcome="stale"}'),
    (n) => n > staleBefore,
  );
  const entry = JSON.parse((await redis.get(`${keyPrefix}package:${id}`))!) as { p: { Title: string } };
  assert.equal(entry.p.Title, "second state", "Redis still holds the newer state");
  const calls = describeCalls();
  assert.match(await say(fake, `/get ${id}`), /Title: second state/);
  assert.equal(describeCalls(), calls, "served from the cache");
});

test("cache-aside race: a Describe that read before a change cannot fill the cache after it", async () => {
  const connection = redis.duplicate();
  after(() => connection.disconnect());
  const cache = new PackageCache(connection, {
    keyPrefix: `${keyPrefix}race:`,
    ttlSeconds: 60,
    versionTtlSeconds: 600,
  });
  const old = create(PackageSchema, { ID: 1n, Title: "old", Material: "m", MaximumVolume: 1 });
  const fresh = create(PackageSchema, { ID: 1n, Title: "fresh", Material: "m", MaximumVolume: 1 });
  // The bot's own Update lands between the miss and the fill.
  let read = await cache.read(1n);
  assert.equal(read.hit, false);
  await cache.invalidate(1n);
  assert.equal(await cache.fill(1n, (read as { token: string }).token, old), false);
  assert.equal((await cache.read(1n)).hit, false, "nothing filled");
  // Another client's change arrives as an event between the miss and the fill.
  read = await cache.read(1n);
  assert.equal(await cache.applyEvent(1n, 10n, fresh), "set");
  assert.equal(await cache.fill(1n, (read as { token: string }).token, old), false);
  const now = await cache.read(1n);
  assert.ok(now.hit && now.pkg.Title === "fresh");
  // Event ids compare as numbers (9 < 10 although "9" > "10" as text).
  assert.equal(await cache.applyEvent(1n, 9n, old), "stale");
  assert.equal(await cache.applyEvent(1n, 10n, old), "stale");
  const still = await cache.read(1n);
  assert.ok(still.hit && still.pkg.Title === "fresh");
  // A removal newer than the entry drops it.
  assert.equal(await cache.applyEvent(1n, 11n, undefined), "removed");
  assert.equal((await cache.read(1n)).hit, false);
});

test("every Telegram update appears on omp-tgbot-commands with the original fields", async () => {
  const nonce = `n${Date.now()}`;
  await fake.sendText(chat, `/help ${nonce}`, { username: "alice" });
  await fake.sendText(chat, `/list ${nonce}`);
  // A stranger's update is published too (it is refused by the bot).
  await fake.sendText(31337, `/get ${nonce}`);
  const records = await poll(
    "three command records",
    async () => watcher.json(commandsTopic).filter((r) => String(r.MessageText).endsWith(nonce)),
    (r) => r.length >= 3,
  );
  for (const r of records)
    assert.deepEqual(Object.keys(r).sort(), ["CallbackQueryData", "MessageText", "TimeStamp", "UserId", "Username"]);
  // Keyed by user: one user's updates keep their order, users' partitions interleave.
  const withoutTime = (r: Record<string, unknown>) => ({ ...r, TimeStamp: undefined });
  assert.deepEqual(records.filter((r) => r.UserId === chat).map(withoutTime), [
    { UserId: chat, Username: "alice", MessageText: `/help ${nonce}`, CallbackQueryData: "", TimeStamp: undefined },
    { UserId: chat, Username: "", MessageText: `/list ${nonce}`, CallbackQueryData: "", TimeStamp: undefined },
  ]);
  assert.deepEqual(records.filter((r) => r.UserId === 31337).map(withoutTime), [
    { UserId: 31337, Username: "", MessageText: `/get ${nonce}`, CallbackQueryData: "", TimeStamp: undefined },
  ]);
  for (const r of records) assert.ok(!Number.isNaN(Date.parse(String(r.TimeStamp))));

  // A button press carries its data.
  const id = await createPackage("to delete");
  await fake.sendText(chat, `/delete ${id}`);
  const sent = fake.chats.get(chat)!.at(-1)!;
  const no = fake.buttons(chat, sent.message_id).find((b) => b.text === "No")!;
  await fake.pressButton(chat, sent.message_id, no.data);
  const pressed = await poll(
    "the button press record",
    async () => watcher.json(commandsTopic).find((r) => r.CallbackQueryData === no.data),
    (r) => r !== undefined,
  );
  assert.equal(pressed!.UserId, chat);
  assert.equal(pressed!.MessageText, "");
  assert.ok(
    (await metric(bot.metricsUrl, "logistic_package_api_bot_messages_published_total", `{topic="${commandsTopic}"}`)) >=
      4,
  );
});

test("Redis stopped: /get still answers from the API, and the metrics and log say so", async () => {
  const port = await freePort();
  const ownRedis = await startRedis(port);
  const telegram = await FakeTelegram.start();
  const second = await startBot(telegram, {
    REDIS_URL: `redis://127.0.0.1:${port}`,
    KAFKA_TOPIC: packageTopic,
    // Only the cache matters here; without Kafka it does not join the main bot's group.
    BOT_KAFKA_ENABLED: "false",
  });
  try {
    const id = await createPackage("redis outage");
    assert.match(await say(telegram, `/get ${id}`), /redis outage/);
    assert.equal(await metric(second.metricsUrl, "logistic_package_api_bot_redis_up"), 1);
    ownRedis.kill("SIGKILL");
    await new Promise((resolve) => ownRedis.once("exit", resolve));
    const calls = describeCalls();
    assert.match(await say(telegram, `/get ${id}`), /redis outage/, "answered without Redis");
    assert.equal(describeCalls(), calls + 1, "from the API");
    assert.equal(await metric(second.metricsUrl, "logistic_package_api_bot_redis_up"), 0);
    assert.ok(
      (await metric(second.metricsUrl, "logistic_package_api_bot_cache_errors_total", '{operation="read"}')) >= 1,
    );
    assert.ok(
      second.logs.lines.some((l) => l.level === "warn" && String(l.msg).startsWith("redis failed")),
      "a warning says the cache is out",
    );
    // Still answering while it stays away.
    assert.match(await say(telegram, `/get ${id}`), /redis outage/);
  } finally {
    await second.app.stop();
    await telegram.close();
    if (ownRedis.exitCode === null && ownRedis.signalCode === null) ownRedis.kill("SIGKILL");
  }
});

test("a broker that is away never holds a command: a full queue drops its oldest message, the rest is sent once it is back", async () => {
  // A broker of this test alone, taken down before the bot starts.
  const own = await startKafkaMock();
  const telegram = await FakeTelegram.start();
  let second: RunningBot | undefined;
  let ownWatcher: TopicWatcher | undefined;
  try {
    await own.createTopic(commandsTopic, 1);
    await own.createTopic(cacheEventsTopic, 1);
    await own.brokerDown(1);
    second = await startBot(
      telegram,
      { KAFKA_BROKERS: own.brokers.join(",") },
      // Retries outlast the outage (backoff capped at 5 s), so what goes is decided by the queue's
      // drop-oldest alone: with one retry the batch in hand was dropped ~100 ms into the outage,
      // and whether /help 6 was still queued then depended on how fast the machine was.
      { kafka: { queueSize: 2, sendRetries: 20 } },
    );
    const texts = ["/help 1", "/help 2", "/help 3", "/help 4", "/help 5", "/help 6"];
    for (const text of texts)
      assert.match(await say(telegram, text), /\/get/, `${text} answered while the broker is away`);
    const metrics = second.metricsUrl;
    await poll(
      "messages dropped from the full queue",
      () =>
        metric(
          metrics,
          "logistic_package_api_bot_messages_dropped_total",
          `{topic="${commandsTopic}",reason="queue_full"}`,
        ),
      (n) => n >= 1,
    );
    await poll(
      "failed attempts counted",
      () => metric(metrics, "logistic_package_api_bot_publish_failures_total", `{topic="${commandsTopic}"}`),
      (n) => n >= 1,
    );
    assert.ok(
      (await metric(metrics, "logistic_package_api_bot_publish_queue_messages", `{topic="${commandsTopic}"}`)) <= 2,
      "the queue stays bounded",
    );
    const warnings = () => second!.logs.lines.filter((l) => String(l.msg).startsWith("bot publish failed"));
    assert.equal(warnings().length, 1, "one warning for the outage, not one per message");
    assert.equal(warnings()[0]!.level, "warn");
    await own.brokerUp(1);
    ownWatcher = await TopicWatcher.start(own.brokers, [commandsTopic]);
    // The newest message is kept by drop-oldest and is sent once the broker is back.
    const sent = await poll(
      "the last command on the topic after the broker is back",
      async () => ownWatcher!.json(commandsTopic).map((r) => r.MessageText),
      (m) => m.includes("/help 6"),
      60_000,
    );
    assert.ok(sent.length < texts.length, `some were dropped (${JSON.stringify(sent)})`);
    assert.ok(
      (await metric(metrics, "logistic_package_api_bot_messages_published_total", `{topic="${commandsTopic}"}`)) >= 1,
    );
    assert.ok(second.logs.lines.some((l) => l.msg === "bot publishing works again"));
  } finally {
    await second?.app.stop();
    await ownWatcher?.stop();
    await telegram.close();
    await own.stop();
  }
});

test("the facade logs a readable line for a message of each topic", async () => {
  let facade: TestFacade | undefined;
  try {
    facade = await startTestFacade(facadeEnv(facadeDb.url, mock.brokers, packageTopic));
    const id = await createPackage("logged");
    // The facade's message-log group starts at the end of each topic: keep producing until it has joined.
    const lines = await poll(
      "a facade log line for each of the three topics",
      async () => {
        await client.updatePackageV1({ PackageID: id, MaximumVolume: 3 + Math.random() });
        await say(fake, `/get ${id}`);
        await new Promise((r) => setTimeout(r, 200));
        const logged = facade!.logs.lines.filter((l) => String(l.msg).startsWith("kafka message:"));
        return {
          event: logged.find(
            (l) => l.topic === packageTopic && (l.event as { packageId?: string } | undefined)?.packageId === id,
          ),
          command: logged.find(
            (l) =>
              l.topic === commandsTopic &&
              (l.command as { MessageText?: string } | undefined)?.MessageText === `/get ${id}`,
          ),
          cache: logged.find(
            (l) => l.topic === cacheEventsTopic && String((l.cacheEvent as { id?: unknown } | undefined)?.id) === id,
          ),
        };
      },
      (v) => v.event !== undefined && v.command !== undefined && v.cache !== undefined,
      60_000,
      0,
    );
    const event = lines.event!;
    assert.match(
      String(event.msg),
      new RegExp(
        `^kafka message: package ${id} updated \\(event \\d+\\): "logged", cardboard, [\\d.]+ cm³, reusable no$`,
      ),
    );
    assert.equal((event.event as { type: string }).type, "Updated");
    assert.equal((event.event as { package: { title: string } }).package.title, "logged");
    assert.equal(event.level, "info");
    assert.match(
      String(lines.command!.msg),
      new RegExp(`^kafka message: telegram: user ${chat} wrote "/get ${id}" at `),
    );
    assert.match(
      String(lines.cache!.msg),
      new RegExp(`^kafka message: bot cache: (Read|Set) description of package ${id} (succeeded|did not succeed) at `),
    );
    // A message it cannot read is logged too, at warn, with the reason.
    const producer = new Kafka({
      clientId: "bot-cache-test-garbage",
      brokers: mock.brokers,
      logLevel: logLevel.NOTHING,
    }).producer();
    await producer.connect();
    await producer.send({ topic: commandsTopic, messages: [{ key: "x", value: "not json {" }] });
    await producer.disconnect();
    const unreadable = await poll(
      "the facade's line for an unreadable message",
      async () => facade!.logs.lines.find((l) => l.msg === `kafka message: unreadable message on ${commandsTopic}`),
      (l) => l !== undefined,
    );
    assert.equal(unreadable!.level, "warn");
    assert.equal(unreadable!.raw, "not json {");
    assert.match(String(unreadable!.reason), /not a bot command record/);
    // Its read model is kept as before.
    assert.ok((await readFacadeMetric(facade.metricsUrl, "logistic_package_api_facade_events_applied_total")) > 0);
  } finally {
    await facade?.stop();
  }
});

/** A redis-server of this test alone (the machine's is shared), in memory, answering PING. */
async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    { stdio: "ignore" },
  );
  const probe = new Redis({
    port,
    host: "127.0.0.1",
    lazyConnect: true,
    retryStrategy: () => 100,
    maxRetriesPerRequest: 0,
  });
  probe.on("error", () => {});
  try {
    await poll(
      "the test's redis-server to answer",
      () => probe.ping().catch(() => "no"),
      (r) => r === "PONG",
      10_000,
    );
  } finally {
    probe.disconnect();
  }
  return child;
}
