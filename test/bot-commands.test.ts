// The bot's argument parsing and formatting, without Telegram or the API
// (bot.test.ts covers them end to end).

import assert from "node:assert/strict";
import { test } from "node:test";
import { escapeHtml, formatVolume } from "../internal/bot/format.js";
import { parseEdit, parseNew, parseOffset, parsePackageId, splitPairs, UserError } from "../internal/bot/parse.js";
import { loadConfig } from "../internal/config/config.js";

const rejects = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (err: unknown) => err instanceof UserError && pattern.test(err.message));

test("package IDs: whole numbers from 1 to 2^63-1", () => {
  assert.equal(parsePackageId(" 42 ", "u"), 42n);
  assert.equal(parsePackageId("9223372036854775807", "u"), 2n ** 63n - 1n);
  rejects(() => parsePackageId("9223372036854775808", "u"), /between 1 and/);
  for (const bad of ["0", "-1", "1.5", "4x", "0x10", "١٢"])
    rejects(() => parsePackageId(bad, "u"), /is not a package ID/);
  rejects(() => parsePackageId("", "/get ID"), /Which package\? Usage: \/get ID/);
});

test("paging offsets from callback data", () => {
  assert.equal(parseOffset("0"), 0n);
  assert.equal(parseOffset("10"), 10n);
  assert.equal(parseOffset("-5"), undefined);
  assert.equal(parseOffset("99999999999999999999"), undefined);
});

test("/new: title | material | volume [| reusable]", () => {
  assert.deepEqual(parseNew(" Big box | cardboard | 1200 | YES "), {
    title: "Big box",
    material: "cardboard",
    maximumVolume: 1200,
    reusable: true,
  });
  assert.deepEqual(parseNew("a|b|.5"), { title: "a", material: "b", maximumVolume: 0.5, reusable: false });
  assert.equal(parseNew("a | b | 2,25 | no").maximumVolume, 2.25);
  rejects(() => parseNew(""), /3 or 4 parts/);
  rejects(() => parseNew("a | b"), /3 or 4 parts/);
  rejects(() => parseNew("a | b | 1 | yes | extra"), /3 or 4 parts/);
  rejects(() => parseNew("a | b | 1e3"), /"1e3" is not a number/);
  rejects(() => parseNew("a | b | -2"), /"-2" is not a number/);
  rejects(() => parseNew("a | b | Infinity"), /not a number/);
  rejects(() => parseNew("a | b | 0.0"), /greater than 0/);
  rejects(() => parseNew("a | b | 1 | perhaps"), /"perhaps" is not yes or no/);
});

test("/edit: ID then field=value pairs, quoted values, case-insensitive field names", () => {
  assert.deepEqual(parseEdit('7 title="Big box" Material=wood volume=3.5 reusable=off'), {
    id: 7n,
    changes: { title: "Big box", material: "wood", maximumVolume: 3.5, reusable: false },
  });
  assert.deepEqual(parseEdit("7 title=«Коробка большая»").changes, { title: "Коробка большая" });
  assert.deepEqual(parseEdit("7 title=“curly quotes”").changes, { title: "curly quotes" });
  assert.deepEqual(parseEdit("7 title='single quotes'").changes, { title: "single quotes" });
  assert.deepEqual(parseEdit('7 title="say \\"hi\\""').changes, { title: 'say "hi"' });
  assert.deepEqual(parseEdit("7\ttitle=x\n material=y").changes, { title: "x", material: "y" });
  rejects(() => parseEdit("7 size=3"), /Unknown field "size"/);
  rejects(() => parseEdit("7 title=a TITLE=b"), /given twice/);
  rejects(() => parseEdit('7 title=""'), /needs a value/);
  rejects(() => parseEdit('7 title="a"b'), /space after the closing quote/);
  rejects(() => parseEdit('7 title="open'), /no closing quote/);
  rejects(() => parseEdit("7 =x"), /Expected field=value/);
  rejects(() => parseEdit("7"), /Nothing to change/);
  rejects(() => parseEdit(""), /Which package/);
});

test("splitPairs keeps '=' and '|' inside values", () => {
  assert.deepEqual(splitPairs('title="a=b | c" material=x=y'), [
    { key: "title", value: "a=b | c" },
    { key: "material", value: "x=y" },
  ]);
});

test("formatting: HTML escaping and float32 volumes", () => {
  assert.equal(escapeHtml(`<a href="x">&</a>`), `&lt;a href="x"&gt;&amp;&lt;/a&gt;`);
  assert.equal(formatVolume(Math.fround(2.2)), "2.2");
  assert.equal(formatVolume(Math.fround(0.1)), "0.1");
  assert.equal(formatVolume(120000), "120000");
  assert.equal(formatVolume(Math.fround(1234567.8)), "1234568");
});

test("bot config: defaults, environment overrides, bad values name the key", () => {
  const defaults = loadConfig({ path: "config.yml", env: {} }).bot;
  assert.deepEqual(defaults, {
    token: "",
    allowedChatIds: [],
    apiRoot: "https://api.telegram.org",
    users: [],
    grpcAddress: "127.0.0.1:8082",
    apiToken: "",
    apiTls: false,
    apiCaFile: "",
    apiCertFile: "",
    apiKeyFile: "",
    requestTimeoutMs: 3000,
    pageSize: 5,
    deleteConfirmTimeoutMs: 60_000,
    metricsPort: 9103,
    cache: {
      redisUrl: "",
      keyPrefix: "logistic-package-api:bot:",
      ttlSeconds: 300,
      versionTtlSeconds: 604_800,
      timeoutMs: 200,
    },
    kafka: {
      enabled: true,
      commandsTopic: "omp-tgbot-commands",
      cacheEventsTopic: "omp-tgbot-cache-events",
      groupId: "logistic-package-api-bot-cache",
      queueSize: 1000,
      sendRetries: 3,
    },
  });
  const fromEnv = loadConfig({
    path: "config.yml",
    env: {
      TELEGRAM_BOT_TOKEN: "1:abc",
      TELEGRAM_ALLOWED_CHAT_IDS: " 12, -1001234567890 ,",
      BOT_GRPC_ADDRESS: "api:8082",
    },
  }).bot;
  assert.equal(fromEnv.token, "1:abc");
  assert.deepEqual(fromEnv.allowedChatIds, [12, -1001234567890]);
  assert.equal(fromEnv.grpcAddress, "api:8082");
  assert.deepEqual(loadConfig({ path: "config.yml", env: { TELEGRAM_ALLOWED_CHAT_IDS: "" } }).bot.allowedChatIds, []);
  assert.throws(
    () => loadConfig({ path: "config.yml", env: { TELEGRAM_ALLOWED_CHAT_IDS: "12,abc" } }),
    /bot\.allowedChatIds/,
  );
  assert.throws(
    () => loadConfig({ path: "config.yml", env: { BOT_GRPC_ADDRESS: "http://x:1" } }),
    /bot\.grpcAddress.*BOT_GRPC_ADDRESS/,
  );
  // Cache, topics and metrics.
  const cached = loadConfig({
    path: "config.yml",
    env: { REDIS_URL: "redis://cache:6379/2", BOT_KAFKA_ENABLED: "false", BOT_METRICS_PORT: "9200" },
  }).bot;
  assert.equal(cached.cache.redisUrl, "redis://cache:6379/2");
  assert.equal(cached.kafka.enabled, false);
  assert.equal(cached.metricsPort, 9200);
  assert.throws(
    () => loadConfig({ path: "config.yml", env: { REDIS_URL: "cache:6379" } }),
    /config key "bot\.cache\.redisUrl" \(from REDIS_URL\)/,
  );
  assert.throws(
    () => loadConfig({ path: "config.yml", env: { BOT_KAFKA_ENABLED: "perhaps" } }),
    /bot\.kafka\.enabled.*BOT_KAFKA_ENABLED/,
  );
});

test("bot users and API credentials: environment forms, bad values name the key", () => {
  const load = (env: Record<string, string>) => loadConfig({ path: "config.yml", env }).bot;
  const fromEnv = load({
    TELEGRAM_USERS: " 123:reader, 456:writer ,789:admin,",
    BOT_API_TOKEN: " s3cret ",
    BOT_API_TLS: "true",
    BOT_API_CA_FILE: "/etc/lpa/ca.pem",
    BOT_API_CERT_FILE: "/etc/lpa/bot.pem",
    BOT_API_KEY_FILE: "/etc/lpa/bot.key",
  });
  assert.deepEqual(fromEnv.users, [
    { id: 123, role: "reader" },
    { id: 456, role: "writer" },
    { id: 789, role: "admin" },
  ]);
  assert.equal(fromEnv.apiToken, "s3cret");
  assert.equal(fromEnv.apiTls, true);
  assert.deepEqual(
    [fromEnv.apiCaFile, fromEnv.apiCertFile, fromEnv.apiKeyFile],
    ["/etc/lpa/ca.pem", "/etc/lpa/bot.pem", "/etc/lpa/bot.key"],
  );
  assert.deepEqual(load({ TELEGRAM_USERS: "" }).users, []);

  const fails = (env: Record<string, string>, pattern: RegExp) => assert.throws(() => load(env), pattern);
  fails({ TELEGRAM_USERS: "123:owner" }, /config key "bot\.users\.0\.role" \(from TELEGRAM_USERS\)/);
  fails({ TELEGRAM_USERS: "123" }, /bot\.users\.0.*expected \{id, role\}, or "id:role"/);
  fails({ TELEGRAM_USERS: "abc:reader" }, /bot\.users\.0/);
  fails({ TELEGRAM_USERS: "-5:reader" }, /bot\.users\.0\.id/);
  fails({ TELEGRAM_USERS: "1:reader,1:admin" }, /bot\.users.*listed twice/);
  fails({ BOT_API_TLS: "maybe" }, /bot\.apiTls.*BOT_API_TLS/);
  // TLS files without TLS would be ignored: refused instead.
  fails({ BOT_API_CA_FILE: "/ca.pem" }, /config key "bot\.apiCaFile".*bot\.apiTls \(BOT_API_TLS\) is false/);
  fails({ BOT_API_TLS: "1", BOT_API_CERT_FILE: "/bot.pem" }, /config key "bot\.apiKeyFile".*set both/);
});
