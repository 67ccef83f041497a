// The admin CLI (cmd/admin/main.ts): argument handling, and `republish`, which
// writes a package's current state as a new outbox event (Updated, marked with
// reason 'republish', sent as the Kafka header event-reason) through the same
// row-locked path as a change.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Knex } from "knex";
import { claimEvents } from "../internal/outbox/claim-events.js";
import { deadLetterEvents } from "../internal/outbox/dead-letter-events.js";
import { PgPackageRepository } from "../internal/packages/package-repo.js";
import { toEventMessage } from "../internal/retranslator/sender/event-message.js";
import { useFixture } from "./helpers/fixture.js";
import { runAdmin } from "./helpers/retranslator.js";

const root = fileURLToPath(new URL("..", import.meta.url));

const fx = useFixture({ server: false });
let repo: PgPackageRepository;
fx.onSetUp(() => {
  repo = new PgPackageRepository(fx.db.db);
});

interface Row {
  id: bigint;
  package_id: bigint;
  type: string;
  reason: string | null;
  payload: Record<string, unknown>;
}

async function outbox(packageId?: bigint): Promise<Row[]> {
  const where = packageId === undefined ? "" : "WHERE package_id = ?";
  const result = await fx.db.db.raw(
    `SELECT id, package_id, type, reason, payload FROM package_event ${where} ORDER BY id`,
    packageId === undefined ? [] : [packageId.toString()],
  );
  return (result as { rows: Row[] }).rows;
}

/** The payload a change written now would carry: the package's current state. */
async function currentPayload(id: bigint): Promise<Record<string, unknown>> {
  const result = await fx.db.db.raw(`SELECT package_event_payload(p) AS payload FROM package p WHERE id = ?`, [
    id.toString(),
  ]);
  return (result as { rows: { payload: Record<string, unknown> }[] }).rows[0]!.payload;
}

/** `count` packages (through the repository, as the API creates them), with an empty outbox afterwards. */
async function seed(count: number): Promise<bigint[]> {
  const ids: bigint[] = [];
  for (let i = 0; i < count; i += 500) {
    const items = Array.from({ length: Math.min(500, count - i) }, (_, j) => ({
      input: { title: `p${i + j}`, material: "cardboard", maximumVolume: 1 + j, reusable: j % 2 === 0 },
      trace: undefined,
    }));
    ids.push(...(await repo.createMany(items)));
  }
  await fx.db.db.raw(`DELETE FROM package_event`);
  return ids;
}

async function reset(): Promise<void> {
  await fx.db.db.raw(
    `TRUNCATE package_event, package_event_dead_letter, idempotency_key, package RESTART IDENTITY CASCADE`,
  );
}

test("--help prints the commands and exits 0, without touching the database", async () => {
  for (const args of [["--help"], ["-h"], ["republish", "--help"]]) {
    const res = await runAdmin("postgres://nobody@127.0.0.1:1/none", args);
    assert.equal(res.code, 0, `${args.join(" ")}: ${res.stderr}`);
    for (const word of [
      "dead-letters",
      "requeue",
      "discard",
      "republish --package ID",
      "republish --all",
      "--since",
      "--dry-run",
      "--after-id",
    ]) {
      assert.ok(res.stdout.includes(word), `help mentions ${word}`);
    }
  }
});

test("bad arguments exit 2 with a message naming the problem, and nothing is done", async () => {
  await reset();
  const [id] = await seed(1);
  const cases: [string[], RegExp][] = [
    [[], /a command is required/],
    [["frobnicate"], /unknown command "frobnicate"/],
    [["dead-letters", "abc"], /LIMIT must be an integer from 1 to 10000, got "abc"/],
    [["dead-letters", "0"], /LIMIT must be an integer/],
    [["dead-letters", "--limit", "100001"], /LIMIT must be an integer/],
    [["dead-letters", "5", "6"], /unexpected argument "6"/],
    [["requeue"], /ID must be a positive id, got nothing/],
    [["discard", "12x"], /ID must be a positive id, got "12x"/],
    [["requeue", "1", "--all"], /requeue takes no --all/],
    [["republish"], /exactly one of --package ID and --all/],
    [["republish", "--package", String(id), "--all"], /exactly one of --package ID and --all/],
    [["republish", "--package", "x"], /--package must be a positive id, got "x"/],
    [["republish", "--package"], /--package/],
    [["republish", "--all", "--since", "yesterday"], /--since must be an ISO 8601 timestamp/],
    [["republish", "--all", "--since", "2026-02-30T00:00:00Z"], /--since must be an ISO 8601 timestamp/],
    [["republish", "--all", "--batch-size", "0"], /--batch-size must be an integer from 1 to 10000/],
    [["republish", "--all", "--after-id", "-3"], /after-id/],
    [["republish", "--package", String(id), "--after-id", "3"], /--after-id and --batch-size go with --all/],
    [["republish", "--all", "--bogus"], /Unknown option '--bogus'/],
  ];
  for (const [args, message] of cases) {
    const res = await runAdmin(fx.db.url, args);
    assert.equal(res.code, 2, `${JSON.stringify(args)} exits 2 (stdout ${res.stdout}, stderr ${res.stderr})`);
    assert.match(res.stderr, message, JSON.stringify(args));
    assert.match(res.stderr, /--help/, "points at --help");
    assert.equal(res.stdout, "", "prints no result");
  }
  assert.deepEqual(await outbox(), [], "no event was written");
});

test("dead-letters takes LIMIT (positional or --limit) and lists at most that many", async () => {
  await reset();
  await fx.db.db.raw(
    `INSERT INTO package_event_dead_letter (id, package_id, type, payload, created, attempts, last_error)
     SELECT g, g, 'Created', '{}', now(), 5, 'broken' FROM generate_series(1, 3) g`,
  );
  for (const args of [
    ["dead-letters", "2"],
    ["dead-letters", "--limit", "2"],
  ]) {
    const res = await runAdmin(fx.db.url, args);
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(
      res.stdout
        .trim()
        .split("\n")
        .map((l) => (JSON.parse(l) as { id: string }).id),
      ["1", "2"],
    );
  }
  const all = await runAdmin(fx.db.url, ["dead-letters"]);
  assert.equal(all.stdout.trim().split("\n").length, 3);
});

test("republish --package writes one Updated event with the current state, after the package's earlier events, sent with event-reason: republish", async () => {
  await reset();
  const id = await repo.create({ title: "box", material: "wood", maximumVolume: 3, reusable: false }, undefined);
  const other = await repo.create({ title: "other", material: "tin", maximumVolume: 1, reusable: true }, undefined);
  await repo.update(id, { title: "box v2" }, undefined);
  await repo.update(id, { reusable: true }, undefined);
  const before = await outbox(id);

  const res = await runAdmin(fx.db.url, ["republish", "--package", id.toString()]);
  assert.equal(res.code, 0, res.stderr);
  const events = await outbox(id);
  assert.equal(events.length, before.length + 1, "exactly one new event");
  assert.deepEqual(events.slice(0, -1), before, "earlier events untouched");
  const republished = events.at(-1)!;
  assert.ok(republished.id > before.at(-1)!.id, "ordered after the package's earlier events");
  assert.equal(republished.type, "Updated");
  assert.equal(republished.reason, "republish");
  assert.deepEqual(republished.payload, await currentPayload(id));
  assert.equal(republished.payload.Title, "box v2");
  assert.equal(republished.payload.Reusable, true);
  assert.match(res.stdout, new RegExp(`republished package ${id} as event ${republished.id}`));
  assert.equal((await outbox(other)).length, 1, "no event for another package");
  // Ordinary changes carry no reason.
  assert.ok(before.every((e) => e.reason === null));

  // The relay's claim carries the reason and the message builder turns it into a header;
  // ordinary events get none. The value is a plain Updated PackageEvent.
  const claimed = await claimEvents(fx.db.db, "republish-test", 100, 30);
  const headers = new Map(claimed.map((e) => [e.id, toEventMessage(e).headers]));
  assert.equal(headers.get(republished.id)?.["event-reason"], "republish");
  assert.equal(headers.get(republished.id)?.["event-type"], "Updated");
  for (const e of before)
    assert.equal(headers.get(e.id)?.["event-reason"], undefined, "a change has no event-reason header");
});

test("republish --package of a removed or unknown package exits 1 and writes nothing", async () => {
  await reset();
  const id = await repo.create({ title: "gone", material: "wood", maximumVolume: 3, reusable: false }, undefined);
  await repo.remove(id, undefined);
  const count = (await outbox()).length;
  for (const target of [id, 999_999n]) {
    const res = await runAdmin(fx.db.url, ["republish", "--package", target.toString()]);
    assert.equal(res.code, 1, res.stderr);
    assert.match(res.stderr, new RegExp(`package ${target}: package not found`));
  }
  assert.equal((await outbox()).length, count);
});

test("republish --package waits for a change in flight on the package and is ordered after its event", async () => {
  await reset();
  const id = await repo.create({ title: "a", material: "wood", maximumVolume: 3, reusable: false }, undefined);
  // A change holding the row lock, not yet committed.
  const trx: Knex.Transaction = await fx.db.db.transaction();
  let republishing: ReturnType<typeof runAdmin> | undefined;
  try {
    await trx.raw(
      `WITH p AS (UPDATE package SET title = 'in flight', updated = now() WHERE id = ? RETURNING *)
       INSERT INTO package_event (package_id, type, payload) SELECT p.id, 'Updated', package_event_payload(ROW(p.*)::package) FROM p`,
      [id.toString()],
    );
    republishing = runAdmin(fx.db.url, ["republish", "--package", id.toString()]);
    // The republish blocks on the row lock (bounded wait for it to be seen waiting).
    const deadline = Date.now() + 30_000;
    for (;;) {
      const waiting = await fx.db.db.raw(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'logistic-package-api/admin' AND wait_event_type = 'Lock'`,
      );
      if ((waiting as { rows: { n: number }[] }).rows[0]!.n > 0) break;
      assert.ok(Date.now() < deadline, "the republish waits for the package's row lock");
      await new Promise((r) => setTimeout(r, 50));
    }
    await trx.commit();
  } catch (err) {
    await trx.rollback();
    throw err;
  }
  const res = await republishing;
  assert.equal(res.code, 0, res.stderr);
  const events = await outbox(id);
  assert.deepEqual(
    events.map((e) => [e.type, e.reason]),
    [
      ["Created", null],
      ["Updated", null],
      ["Updated", "republish"],
    ],
  );
  assert.equal(events[2]!.payload.Title, "in flight", "the republished state includes the change before it");
});

test("republish --all over 2,500 packages: one event per live package in batches, none for removed ones, with progress", async () => {
  await reset();
  const ids = await seed(2500);
  const removed = ids.filter((_, i) => i % 250 === 7);
  for (const id of removed) await repo.remove(id, undefined);
  await fx.db.db.raw(`DELETE FROM package_event`);

  const res = await runAdmin(fx.db.url, ["republish", "--all"]);
  assert.equal(res.code, 0, res.stderr);
  const events = await outbox();
  const live = ids.filter((id) => !removed.includes(id));
  assert.deepEqual(
    events.map((e) => e.package_id),
    live,
    "one event per live package, in id order",
  );
  assert.ok(events.every((e) => e.type === "Updated" && e.reason === "republish"));
  const progress = res.stderr
    .trim()
    .split("\n")
    .filter((l) => l.startsWith("republish: ["));
  assert.equal(progress.length, 3, `one progress line per batch of 1000:\n${res.stderr}`);
  assert.match(progress.at(-1)!, /100% 2490\/2490 packages, 2490 events, last id \d+/);
  assert.match(res.stdout, /republished 2490 packages/);
  // A spot check of the content: the state at the time of the republish.
  const sample = events[1234]!;
  assert.deepEqual(sample.payload, await currentPayload(sample.package_id));
});

test("--dry-run prints the count and writes nothing; --since filters by created or updated time", async () => {
  await reset();
  const ids = await seed(30);
  // Ten packages untouched since 2020, ten created in 2020 and updated in 2026, ten from 2026.
  await fx.db.db.raw(`UPDATE package SET created = '2020-01-01T00:00:00Z', updated = NULL WHERE id <= ?`, [
    ids[9]!.toString(),
  ]);
  await fx.db.db.raw(
    `UPDATE package SET created = '2020-01-01T00:00:00Z', updated = '2026-06-01T00:00:00Z' WHERE id > ? AND id <= ?`,
    [ids[9]!.toString(), ids[19]!.toString()],
  );
  await fx.db.db.raw(`UPDATE package SET created = '2026-06-01T00:00:00Z', updated = NULL WHERE id > ?`, [
    ids[19]!.toString(),
  ]);

  const dry = await runAdmin(fx.db.url, ["republish", "--all", "--dry-run"]);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /would republish 30 packages/);
  const drySince = await runAdmin(fx.db.url, ["republish", "--all", "--since", "2025-01-01T00:00:00Z", "--dry-run"]);
  assert.match(drySince.stdout, /would republish 20 packages/);
  const dryOne = await runAdmin(fx.db.url, ["republish", "--package", ids[0]!.toString(), "--dry-run"]);
  assert.match(dryOne.stdout, /would republish 1 packages/);
  assert.deepEqual(await outbox(), [], "a dry run writes nothing");

  const res = await runAdmin(fx.db.url, ["republish", "--all", "--since", "2025-01-01", "--batch-size", "7"]);
  assert.equal(res.code, 0, res.stderr);
  assert.deepEqual(
    (await outbox()).map((e) => e.package_id),
    ids.slice(10),
    "only packages created or updated since",
  );
  const old = await runAdmin(fx.db.url, ["republish", "--package", ids[0]!.toString(), "--since", "2025-01-01"]);
  assert.equal(old.code, 1, "a package outside --since is not republished");
});

test("republish --all stops after the current batch on SIGINT, prints --after-id, and a resumed run completes it exactly once", async () => {
  await reset();
  const ids = await seed(2500);
  // Hold the row lock of a package in the fourth batch of 100, so the run is inside
  // that batch when it is interrupted, whatever the machine's speed.
  const blocker = ids[350]!;
  const trx: Knex.Transaction = await fx.db.db.transaction();
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "cmd/admin/main.ts", "republish", "--all", "--batch-size", "100"],
    {
      cwd: root,
      env: { ...process.env, DATABASE_URL: fx.db.url },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
  try {
    await trx.raw(`SELECT 1 FROM package WHERE id = ? FOR UPDATE`, [blocker.toString()]);
    const deadline = Date.now() + 60_000;
    // Three batches done: the fourth is the one waiting for the lock (it starts right after the third's line).
    while (!stderr.includes(`last id ${ids[299]}\n`)) {
      assert.ok(Date.now() < deadline, `the run reaches the blocked batch:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGINT");
    while (!stderr.includes("stopping after the current batch")) {
      assert.ok(Date.now() < deadline, `the run acknowledges the interrupt:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    await trx.commit();
  }
  assert.equal(await exited, 130, `interrupted exit code:\n${stderr}`);
  const resumeAt = /resume with --after-id (\d+)/.exec(stderr)?.[1];
  assert.equal(resumeAt, ids[399]!.toString(), `the batch in flight completed, then the run stopped:\n${stderr}`);
  assert.match(stdout, /republished 400 packages \(interrupted/);
  assert.deepEqual(
    (await outbox()).map((e) => e.package_id),
    ids.slice(0, 400),
  );

  const resumed = await runAdmin(fx.db.url, ["republish", "--all", "--after-id", resumeAt!]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stdout, /republished 2100 packages/);
  assert.deepEqual(
    (await outbox()).map((e) => e.package_id),
    ids,
    "every package exactly once, in order",
  );
});

test("a republished event that dead-letters keeps its reason, and a requeue puts it back marked", async () => {
  await reset();
  const id = await repo.create({ title: "dl", material: "wood", maximumVolume: 3, reusable: false }, undefined);
  await fx.db.db.raw(`DELETE FROM package_event`);
  const res = await runAdmin(fx.db.url, ["republish", "--package", id.toString()]);
  assert.equal(res.code, 0, res.stderr);
  const [claimed] = await claimEvents(fx.db.db, "dl-test", 10, 30);
  assert.equal(claimed?.reason, "republish");
  assert.equal(
    await deadLetterEvents(fx.db.db, "dl-test", [
      { id: claimed.id, error: "rejected", retriable: false, lease: claimed.lease },
    ]),
    1,
  );
  const parked = await fx.db.db.raw(`SELECT reason FROM package_event_dead_letter WHERE id = ?`, [
    claimed.id.toString(),
  ]);
  assert.deepEqual((parked as { rows: unknown[] }).rows, [{ reason: "republish" }]);

  const requeued = await runAdmin(fx.db.url, ["requeue", claimed.id.toString()]);
  assert.equal(requeued.code, 0, requeued.stderr);
  const [again] = await claimEvents(fx.db.db, "dl-test-2", 10, 30);
  assert.equal(again?.id, claimed.id);
  assert.equal(toEventMessage(again!).headers["event-reason"], "republish");
});
