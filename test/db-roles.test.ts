// Least privilege in PostgreSQL: db/roles.sql's owner role migrates, the
// grpc-server and the retranslator serve under its app role, which can read
// and write rows but cannot change the schema or the migrations' bookkeeping.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import pg from "pg";
import { MigrationPermissionError } from "../internal/database/migrate.js";
import { EventType } from "../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";
import { runBinary } from "./helpers/binaries.js";
import { createRoleDatabase, type RoleDatabase } from "./helpers/db-roles.js";
import { facadeEnv, startTestFacade, type TestFacade } from "./helpers/facade.js";
import { type PackageApiClient, packageApiClient } from "./helpers/grpc-client.js";
import { type KafkaMock, startKafkaMock } from "./helpers/kafka-mock.js";
import { poll } from "./helpers/poll.js";
import { fastRetranslatorEnv, runAdmin, startTestRetranslator, type TestRetranslator } from "./helpers/retranslator.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { readTopic, type TopicMessage } from "./helpers/topic-checker.js";

const topic = "roles-package-events";
let rdb: RoleDatabase;
let kafka: KafkaMock | undefined;
let server: TestServer | undefined;
let relay: TestRetranslator | undefined;
let client: PackageApiClient | undefined;
let facadeRdb: RoleDatabase | undefined;
let facade: TestFacade | undefined;

before(async () => {
  rdb = await createRoleDatabase();
});

after(async () => {
  await facade?.stop();
  await facadeRdb?.drop();
  client?.close();
  await relay?.stop();
  await server?.stop();
  await kafka?.stop();
  await rdb?.drop();
});

/** `npm run migrate` as a child process with these variables. */
const runMigrate = (env: Record<string, string>) => runBinary("migrate", env);

async function asApp<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: rdb.app.url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function deniedAsApp(sql: string): Promise<string> {
  return asApp(async (c) => {
    try {
      await c.query(sql);
    } catch (err) {
      assert.equal(
        (err as { code?: string }).code,
        "42501",
        `${sql}: expected insufficient_privilege, got ${String(err)}`,
      );
      return (err as Error).message;
    }
    assert.fail(`${sql}: the app role was allowed`);
  });
}

const typesOf = (messages: TopicMessage[], id: string) =>
  messages.filter((m) => m.event.PackageID.toString() === id).map((m) => m.event.Type);

test("npm run migrate under the app role alone fails with a message naming DATABASE_MIGRATION_URL, not the password", async () => {
  const r = await runMigrate({ DATABASE_URL: rdb.app.url });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`role "${rdb.app.role}" of database\\.url may not change the schema`));
  assert.match(r.stderr, /permission denied for schema public/);
  assert.match(r.stderr, /set database\.migrationUrl \(DATABASE_MIGRATION_URL\) to the schema owner's URL/);
  assert.ok(!r.stderr.includes(rdb.app.password), "the password stays out of the message");
  const tables = await rdb.db.raw(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'`);
  assert.equal((tables as { rows: { n: number }[] }).rows[0]!.n, 0, "nothing was created");
});

test("npm run migrate with DATABASE_MIGRATION_URL migrates as the owner; DATABASE_URL stays the app role's", async () => {
  const r = await runMigrate({ DATABASE_URL: rdb.app.url, DATABASE_MIGRATION_URL: rdb.owner.url });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^applied: .*_packages_and_events\.ts/);
  const owners = await rdb.db.raw(
    `SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename IN ('package', 'package_event', 'package_event_dead_letter', 'idempotency_key', 'knex_migrations')`,
  );
  assert.deepEqual((owners as { rows: { tableowner: string }[] }).rows, [{ tableowner: rdb.owner.role }]);
});

test("the app role cannot change the schema, truncate, or touch the migrations' bookkeeping", async () => {
  assert.match(await deniedAsApp(`DROP TABLE package_event`), /must be owner of table package_event/);
  assert.match(await deniedAsApp(`ALTER TABLE package ADD COLUMN note text`), /must be owner of table package/);
  assert.match(await deniedAsApp(`CREATE TABLE evil (id int)`), /permission denied for schema public/);
  assert.match(await deniedAsApp(`TRUNCATE package_event`), /permission denied for table package_event/);
  assert.match(await deniedAsApp(`CREATE SCHEMA evil`), /permission denied for database/);
  assert.match(await deniedAsApp(`SELECT * FROM knex_migrations`), /permission denied for table knex_migrations/);
  assert.match(
    await deniedAsApp(`UPDATE knex_migrations_lock SET is_locked = 1`),
    /permission denied for table knex_migrations_lock/,
  );
  assert.match(await deniedAsApp(`DROP FUNCTION package_event_payload(package)`), /must be owner of function/);
});

test("a grpc-server started under the app role with migrateOnStart and no migration URL stops with a clear error", async () => {
  await assert.rejects(startTestServer(rdb.app.url), (err: unknown) => {
    assert.ok(err instanceof MigrationPermissionError, String(err));
    assert.match(err.message, /set database\.migrationUrl \(DATABASE_MIGRATION_URL\)/);
    assert.ok(!err.message.includes(rdb.app.password));
    return true;
  });
});

test("grpc-server and retranslator under the app role: Create, Update, Remove reach Kafka; a dead letter is requeued", async () => {
  kafka = await startKafkaMock();
  await kafka.createTopic(topic, 2);
  // migrateOnStart stays on: both binaries migrate (nothing pending) through the owner's URL.
  server = await startTestServer(rdb.app.url, { DATABASE_MIGRATION_URL: rdb.owner.url });
  // maxAttempts 1: one non-retriable produce error dead-letters an event (under the app role).
  relay = await startTestRetranslator(
    { ...fastRetranslatorEnv(rdb.app.url, kafka.brokers, topic), DATABASE_MIGRATION_URL: rdb.owner.url },
    { retranslator: { maxAttempts: 1, retryBackoffMinMs: 50, retryBackoffMaxMs: 200 } },
  );
  client = packageApiClient(server.grpcAddress);

  const a = (await client.createPackageV1({ Title: "Crate", Material: "wood", MaximumVolume: 10 })).ID as string;
  await client.updatePackageV1({ PackageID: a, Title: "Big crate" });
  await client.removePackageV1({ PackageID: a });
  const b = (
    await client.createPackageV1({ Title: "Box", Material: "paper", MaximumVolume: 2 }, { "x-request-id": "roles-1" })
  ).ID as string;
  assert.equal((await client.describePackageV1({ PackageID: b })).Value.Title, "Box");
  assert.equal((await client.listPackagesV1({ Limit: 10 })).Packages.length, 1);

  const delivered = await readTopic(
    kafka.brokers,
    topic,
    (m) => typesOf(m, a).length === 3 && typesOf(m, b).length === 1,
  );
  assert.deepEqual(typesOf(delivered, a), [EventType.Created, EventType.Updated, EventType.Removed]);
  assert.deepEqual(typesOf(delivered, b), [EventType.Created]);
  await poll(
    "the outbox to be emptied by the relay's deletes",
    () => rdb.db("package_event").count({ n: "*" }),
    (r) => Number(r[0]!.n) === 0,
  );

  // A failing event moves to the dead-letter table, and the admin CLI, also as the app role, requeues it.
  await kafka.pushErrors(0, 1, [87]);
  const c = (await client.createPackageV1({ Title: "Poison", Material: "glass", MaximumVolume: 1 })).ID as string;
  const dead = await poll(
    "the event to be dead-lettered",
    async () =>
      (await rdb.db.raw(`SELECT id::text FROM package_event_dead_letter WHERE package_id = ?`, [c])).rows as {
        id: string;
      }[],
    (rows) => rows.length === 1,
  );
  const requeue = await runAdmin(rdb.app.url, ["requeue", dead[0]!.id]);
  assert.equal(requeue.code, 0, requeue.stderr);
  const after = await readTopic(kafka.brokers, topic, (m) => typesOf(m, c).length === 1);
  assert.deepEqual(typesOf(after, c), [EventType.Created]);

  // LISTEN works without any grant: the relay never fell back to polling alone.
  assert.deepEqual(
    relay.logs.lines.filter((l) => l.msg === "LISTEN connection failed"),
    [],
  );
  assert.deepEqual(
    server.logs.lines.filter((l) => (l.level as number) >= 50),
    [],
    "no error was logged by the server",
  );
});

test("the facade under its own app role: FACADE_DATABASE_MIGRATION_URL migrates, the read model fills, DDL is refused", async () => {
  assert.ok(kafka !== undefined, "runs after the API test, reading the events it published");
  facadeRdb = await createRoleDatabase();
  const env = facadeEnv(facadeRdb.app.url, kafka.brokers, topic);
  await assert.rejects(startTestFacade(env), (err: unknown) => {
    assert.ok(err instanceof MigrationPermissionError, String(err));
    assert.match(err.message, /role "lpa_app_[0-9a-f]+" of facade\.databaseUrl may not change the schema/);
    assert.match(err.message, /set facade\.migrationUrl \(FACADE_DATABASE_MIGRATION_URL\)/);
    return true;
  });
  facade = await startTestFacade({ ...env, FACADE_DATABASE_MIGRATION_URL: facadeRdb.owner.url });
  const rows = await poll(
    "the read model to hold the published packages",
    async () =>
      (await facadeRdb!.db.raw(`SELECT title, removed FROM facade_package ORDER BY id`)).rows as {
        title: string;
        removed: boolean;
      }[],
    (r) => r.length === 3,
  );
  assert.deepEqual(rows, [
    { title: "Big crate", removed: true },
    { title: "Box", removed: false },
    { title: "Poison", removed: false },
  ]);
  const owner = await facadeRdb.db.raw(`SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'`);
  assert.deepEqual((owner as { rows: unknown[] }).rows, [{ tableowner: facadeRdb.owner.role }]);
  const c = new pg.Client({ connectionString: facadeRdb.app.url });
  await c.connect();
  try {
    await assert.rejects(c.query(`DROP TABLE facade_inbox`), (err: { code?: string }) => err.code === "42501");
    await assert.rejects(
      c.query(`SELECT * FROM facade_knex_migrations`),
      (err: { code?: string }) => err.code === "42501",
    );
  } finally {
    await c.end();
  }
});
