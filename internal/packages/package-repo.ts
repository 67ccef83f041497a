import type { Database } from "../database/database.js";
import { query, rowsJson } from "../database/query.js";
import { AlreadyExistsError, packageNotFound } from "../domain/errors.js";
import type { NewPackage, PackageChanges, PackageRecord, TraceContext } from "../domain/package.js";
import { CreateBatcher, type CreateBatchingOptions } from "./create-batcher.js";

/**
 * Every change is one SQL statement that writes the package and its event
 * together: a data-modifying CTE changes the row (taking its row lock), and the
 * event insert reads from that CTE, so the event id is drawn only after the
 * lock is held. Per package, event id order therefore equals commit order
 * (docs/design.md §3.2), and one statement is one round trip and one transaction.
 */
export interface PackageRepository {
  create(input: NewPackage, trace: TraceContext | undefined): Promise<bigint>;
  /** Idempotent create: the first request with `key` creates; repeats get the same id back. */
  createOnce(input: NewPackage, trace: TraceContext | undefined, key: IdempotencyKey): Promise<CreateOnceResult>;
  describe(id: bigint): Promise<PackageRecord>;
  list(offset: bigint, limit: number): Promise<PackageRecord[]>;
  update(id: bigint, changes: PackageChanges, trace: TraceContext | undefined): Promise<void>;
  remove(id: bigint, trace: TraceContext | undefined): Promise<void>;
  /** Deletes up to `batchSize` expired idempotency keys; returns how many. */
  deleteExpiredKeys(retentionSeconds: number, batchSize: number): Promise<number>;
}

export interface CreateItem {
  input: NewPackage;
  trace: TraceContext | undefined;
}

export interface IdempotencyKey {
  key: string;
  /** The header the client sent the key in, named in the AlreadyExists message. */
  header: string;
  /** Digest of the request body: a repeat must match it. */
  requestHash: Buffer;
  retentionSeconds: number;
}

export interface CreateOnceResult {
  id: bigint;
  /** True when an earlier request with the same key created the package. */
  replayed: boolean;
}

const columns = `id, title, material, maximum_volume AS "maximumVolume", reusable, created, updated`;

// Shared tail of every change: write the event from the row the CTE `p` returned.
const insertEventFrom = (type: string) => `
  e AS (
    INSERT INTO package_event (package_id, type, payload, traceparent, tracestate)
    SELECT p.id, '${type}', package_event_payload(ROW(p.*)::package), ?, ? FROM p
  )`;

// The create statements run as named prepared statements (query.ts,
// StatementOptions.name): they are the hot ones. Their texts are constants, so
// that one name always stands for one text.

const createOneSql = `WITH p AS (
         INSERT INTO package (title, material, maximum_volume, reusable)
         VALUES (?, ?, ?, ?) RETURNING *
       ), ${insertEventFrom("Created")}
       SELECT id FROM p`;

const createManySql = `WITH input AS (
         -- Volatile (nextval): materialized once, so p, e and the result see the same ids.
         SELECT nextval(pg_get_serial_sequence('package', 'id')) AS id, t.*
         FROM jsonb_to_recordset(?::jsonb)
           AS t(ord int, title text, material text, maximum_volume real, reusable boolean, traceparent text, tracestate text)
       ), p AS (
         INSERT INTO package (id, title, material, maximum_volume, reusable)
         SELECT id, title, material, maximum_volume, reusable FROM input RETURNING *
       ), e AS (
         INSERT INTO package_event (package_id, type, payload, traceparent, tracestate)
         SELECT p.id, 'Created', package_event_payload(ROW(p.*)::package), input.traceparent, input.tracestate
         FROM p JOIN input ON input.id = p.id
       )
       SELECT id FROM input ORDER BY ord`;

// The id is drawn first so that the key row can name its package in the same
// statement. A concurrent request with the same key waits on the key's
// unique index until the first commits, then finds the conflict and creates
// nothing; an expired key is taken over (the WHERE on DO UPDATE).
const createOnceSql = `WITH new_id AS (
         SELECT nextval(pg_get_serial_sequence('package', 'id')) AS id
       ), k AS (
         INSERT INTO idempotency_key (key, request_hash, package_id)
         SELECT ?, ?, id FROM new_id
         ON CONFLICT (key) DO UPDATE
           SET request_hash = excluded.request_hash, package_id = excluded.package_id, created = now()
           WHERE idempotency_key.created < now() - make_interval(secs => ?)
         RETURNING package_id
       ), p AS (
         INSERT INTO package (id, title, material, maximum_volume, reusable)
         SELECT k.package_id, ?, ?, ?, ? FROM k RETURNING *
       ), ${insertEventFrom("Created")}
       SELECT id FROM p`;

export class PgPackageRepository implements PackageRepository {
  private readonly batcher: CreateBatcher | undefined;

  /** With `batching`, creates without an idempotency key are group-committed (create-batcher.ts). */
  constructor(
    private readonly db: Database,
    batching?: CreateBatchingOptions,
  ) {
    this.batcher =
      batching === undefined
        ? undefined
        : new CreateBatcher(
            { create: (input, trace) => this.createAlone(input, trace), createMany: (items) => this.createMany(items) },
            batching,
          );
  }

  create(input: NewPackage, trace: TraceContext | undefined): Promise<bigint> {
    return this.batcher?.create(input, trace) ?? this.createAlone(input, trace);
  }

  /** One package and its event, in a statement of its own. */
  private async createAlone(input: NewPackage, trace: TraceContext | undefined): Promise<bigint> {
    const rows = await query<{ id: bigint }>(
      this.db,
      createOneSql,
      [input.title, input.material, input.maximumVolume, input.reusable, ...traceBindings(trace)],
      { name: "package_create" },
    );
    return rows[0]!.id;
  }

  /**
   * Creates several packages, each with its event, in one statement (and so
   * one transaction): the ids come back in the order of `items`. All or none.
   */
  async createMany(items: readonly CreateItem[]): Promise<bigint[]> {
    const input = rowsJson(
      items.map((i, ord) => ({
        ord,
        title: i.input.title,
        material: i.input.material,
        maximum_volume: i.input.maximumVolume,
        reusable: i.input.reusable,
        traceparent: i.trace?.traceparent ?? null,
        tracestate: i.trace?.tracestate ?? null,
      })),
    );
    const rows = await query<{ id: bigint }>(
      this.db,
      createManySql,
      // One text whatever the batch's size (its rows are one JSON parameter): one prepared statement.
      [input],
      { name: "package_create_many" },
    );
    return rows.map((r) => r.id);
  }

  async createOnce(input: NewPackage, trace: TraceContext | undefined, key: IdempotencyKey): Promise<CreateOnceResult> {
    const rows = await query<{ id: bigint }>(
      this.db,
      createOnceSql,
      [
        key.key,
        key.requestHash,
        key.retentionSeconds,
        input.title,
        input.material,
        input.maximumVolume,
        input.reusable,
        ...traceBindings(trace),
      ],
      { name: "package_create_once" },
    );
    if (rows.length > 0) return { id: rows[0]!.id, replayed: false };

    const existing = await query<{ requestHash: Buffer; packageId: bigint }>(
      this.db,
      `SELECT request_hash AS "requestHash", package_id AS "packageId" FROM idempotency_key WHERE key = ?`,
      [key.key],
    );
    const first = existing[0];
    if (first === undefined) {
      // Expired and swept between the two statements: the key is free again.
      return this.createOnce(input, trace, key);
    }
    if (!first.requestHash.equals(key.requestHash)) {
      throw new AlreadyExistsError(`${key.header} was already used with a different request`);
    }
    return { id: first.packageId, replayed: true };
  }

  async describe(id: bigint): Promise<PackageRecord> {
    const rows = await query<PackageRecord>(this.db, `SELECT ${columns} FROM package WHERE id = ? AND NOT removed`, [
      id,
    ]);
    if (rows.length === 0) throw packageNotFound();
    return rows[0]!;
  }

  async list(offset: bigint, limit: number): Promise<PackageRecord[]> {
    return query<PackageRecord>(
      this.db,
      `SELECT ${columns} FROM package WHERE NOT removed ORDER BY id LIMIT ? OFFSET ?`,
      [limit, offset],
    );
  }

  async update(id: bigint, changes: PackageChanges, trace: TraceContext | undefined): Promise<void> {
    const rows = await query<{ id: bigint }>(
      this.db,
      `WITH p AS (
         UPDATE package SET
           title          = coalesce(?::text, title),
           material       = coalesce(?::text, material),
           maximum_volume = coalesce(?::real, maximum_volume),
           reusable       = coalesce(?::boolean, reusable),
           updated        = now()
         WHERE id = ? AND NOT removed
         RETURNING *
       ), ${insertEventFrom("Updated")}
       SELECT id FROM p`,
      [
        changes.title ?? null,
        changes.material ?? null,
        changes.maximumVolume ?? null,
        changes.reusable ?? null,
        id,
        ...traceBindings(trace),
      ],
    );
    if (rows.length === 0) throw packageNotFound();
  }

  async remove(id: bigint, trace: TraceContext | undefined): Promise<void> {
    const rows = await query<{ id: bigint }>(
      this.db,
      `WITH p AS (
         UPDATE package SET removed = true WHERE id = ? AND NOT removed RETURNING *
       ), ${insertEventFrom("Removed")}
       SELECT id FROM p`,
      [id, ...traceBindings(trace)],
    );
    if (rows.length === 0) throw packageNotFound();
  }

  async deleteExpiredKeys(retentionSeconds: number, batchSize: number): Promise<number> {
    // The age test is repeated in the outer WHERE on purpose. The subquery
    // picks keys by the statement's snapshot; when createOnce takes over one of
    // them (ON CONFLICT DO UPDATE sets created = now()) and commits while this
    // DELETE waits for the row lock, Postgres re-checks only the outer WHERE
    // against the new row version (READ COMMITTED), not the subquery. Without
    // the repeat the renewed key, which names a package just created, would be
    // deleted, and a retry of that create would make a second package.
    const rows = await query<{ key: string }>(
      this.db,
      `DELETE FROM idempotency_key
       WHERE key IN (
         SELECT key FROM idempotency_key
         WHERE created < now() - make_interval(secs => ?)
         ORDER BY created LIMIT ?
       )
       AND created < now() - make_interval(secs => ?)
       RETURNING key`,
      [retentionSeconds, batchSize, retentionSeconds],
    );
    return rows.length;
  }
}

function traceBindings(trace: TraceContext | undefined): [string | null, string | null] {
  return [trace?.traceparent ?? null, trace?.tracestate ?? null];
}
