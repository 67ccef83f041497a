import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { claimEvents } from "../internal/repo/outbox/claim-events.js";
import { deadLetterEvents } from "../internal/repo/outbox/dead-letter-events.js";
import { reapExpiredLeases, releaseFailedEvents, releaseUnsentEvents } from "../internal/repo/outbox/release-events.js";
import { PgPackageRepository } from "../internal/repo/package-repo.js";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";

// The outbox statements against the real Postgres: a late outcome of an
// expired claim must not touch a newer claim of the same row, even when both
// claims were made by the same retranslator.

let db: TestDatabase;

before(async () => {
  db = await createTestDatabase();
});

after(async () => {
  await db.drop();
});

async function row(id: bigint) {
  const result = await db.db.raw(`SELECT locked_by, locked_until::text AS lease, attempts FROM package_event WHERE id = ?`, [
    id.toString(),
  ]);
  return (result as { rows: { locked_by: string | null; lease: string | null; attempts: number }[] }).rows[0];
}

test("outcomes of an expired claim do not apply to the row's newer claim by the same owner", async () => {
  const repo = new PgPackageRepository(db.db);
  await repo.create({ title: "a", material: "m", maximumVolume: 1, reusable: false }, undefined);

  const [first] = await claimEvents(db.db, "relay-1", 10, 60);
  assert.ok(first);
  // The relay stalls past its lease; maintenance frees the row; the same relay claims it again.
  await db.db.raw(`UPDATE package_event SET locked_until = now() - interval '1 second' WHERE id = ?`, [first.id.toString()]);
  assert.equal(await reapExpiredLeases(db.db), 1);
  const [second] = await claimEvents(db.db, "relay-1", 10, 60);
  assert.ok(second);
  assert.equal(second.id, first.id);
  assert.notEqual(second.lease, first.lease);

  // Now the first claim's outcomes arrive, late.
  const stale = { id: first.id, lease: first.lease, error: "late", retriable: false };
  assert.equal(await releaseFailedEvents(db.db, "relay-1", [stale], { minMs: 1, maxMs: 1 }), 0);
  assert.equal(await releaseUnsentEvents(db.db, "relay-1", [{ id: first.id, lease: first.lease }]), 0);
  assert.equal(await deadLetterEvents(db.db, "relay-1", [stale]), 0);
  assert.deepEqual(await row(first.id), { locked_by: "relay-1", lease: second.lease, attempts: 2 });

  // The current claim's outcome does apply.
  const current = { id: second.id, lease: second.lease, error: "too large", retriable: false };
  assert.equal(await deadLetterEvents(db.db, "relay-1", [current]), 1);
  assert.equal(await row(first.id), undefined);
});
