import type { Database } from "../database/database.js";
import { databaseErrorKind, describeDatabaseError } from "../database/pg-errors.js";
import type { Logger } from "../logger/logger.js";
import { decodePackageEvent, type PackageChange } from "./decode.js";
import { lockPackages } from "./repo/lock-packages.js";
import { recordInbox } from "./repo/record-inbox.js";
import { recordRejected } from "./repo/record-rejected.js";
import { type PackageVersion, upsertPackages } from "./repo/upsert-packages.js";

export interface BatchMessage {
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
}

/** What kafkajs fetched from one partition, in offset order. */
export interface Batch {
  topic: string;
  partition: number;
  /** The partition's next offset to be written, when fetched. */
  highWatermark: string;
  messages: readonly BatchMessage[];
}

export type MessageOutcome =
  /** The read model now holds this event's state. */
  | { kind: "applied"; offset: string; change: PackageChange }
  /** New, but older than the state already held: ignored. */
  | { kind: "stale"; offset: string; change: PackageChange }
  /** Taken in before (or earlier in this batch): changes nothing. `change` is null for a rejected message seen again. */
  | { kind: "duplicate"; offset: string; change: PackageChange | null }
  /** Unusable: recorded in facade_rejected and passed over. */
  | { kind: "rejected"; offset: string; error: string };

export interface BatchOutcome {
  batch: Batch;
  /** One per message, in offset order, all committed. */
  outcomes: MessageOutcome[];
}

/** Applies a batch to the read model; resolves only once it is committed. */
export interface BatchApplier {
  apply(batch: Batch): Promise<BatchOutcome>;
}

type Item = { message: BatchMessage; change: PackageChange } | { message: BatchMessage; error: string };

/**
 * One transaction per batch, a fixed number of statements whatever its size:
 * record the rejects, record the event ids in the inbox (a conflict = a copy
 * taken in before), lock the packages concerned, then store each package's
 * newest state once. Events of a package share a partition, so the batch's
 * offset order is their order.
 */
export class PgBatchApplier implements BatchApplier {
  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
  ) {}

  async apply(batch: Batch): Promise<BatchOutcome> {
    const items = batch.messages.map(decodeItem);
    try {
      return { batch, outcomes: await this.transact(batch, items) };
    } catch (err) {
      if (databaseErrorKind(err) !== "row") throw err;
      this.logger.warn(
        {
          err: describeDatabaseError(err),
          partition: batch.partition,
          offset: batch.messages[0]?.offset,
          messages: items.length,
        },
        "the database refused a batch; applying its messages one at a time to set the refused one aside",
      );
    }
    // A message the database refuses (its row, not an outage: pg-errors.ts) would fail
    // every retry of its batch and block the partition: find it, reject it,
    // apply the rest. Redelivery after a crash in here is deduplicated as usual.
    const outcomes: MessageOutcome[] = [];
    for (const item of items) {
      try {
        outcomes.push(...(await this.transact(batch, [item])));
      } catch (err) {
        if (databaseErrorKind(err) !== "row") throw err;
        const error = `refused by the database: ${describeDatabaseError(err).message}`;
        outcomes.push(...(await this.transact(batch, [{ message: item.message, error }])));
      }
    }
    return { batch, outcomes };
  }

  private transact(batch: Batch, items: readonly Item[]): Promise<MessageOutcome[]> {
    return this.db.transaction(async (trx) => {
      const rejects = items.flatMap((i) => ("error" in i ? [{ ...i.message, error: i.error }] : []));
      const changes = items.flatMap((i) => ("change" in i ? [i.change] : []));

      const recorded = await recordRejected(
        trx,
        rejects.map((r) => ({ topic: batch.topic, partition: batch.partition, ...r })),
      );
      const fresh = await recordInbox(trx, changes);
      const packageIds = [...new Set(changes.filter((c) => fresh.has(c.eventId)).map((c) => c.packageId))];
      const held = await lockPackages(trx, packageIds);

      const seen = new Set<bigint>();
      const newest = new Map<bigint, PackageVersion>();
      const outcomes = items.map((item): MessageOutcome => {
        const offset = item.message.offset;
        if ("error" in item) {
          return recorded.has(`${batch.partition}:${offset}`)
            ? { kind: "rejected", offset, error: item.error }
            : { kind: "duplicate", offset, change: null };
        }
        const { change } = item;
        if (!fresh.has(change.eventId) || seen.has(change.eventId)) return { kind: "duplicate", offset, change };
        seen.add(change.eventId);
        if (change.eventId <= (held.get(change.packageId) ?? 0n)) return { kind: "stale", offset, change };
        held.set(change.packageId, change.eventId);
        newest.set(change.packageId, { eventId: change.eventId, state: change.state });
        return { kind: "applied", offset, change };
      });
      await upsertPackages(trx, [...newest.values()]);
      return outcomes;
    });
  }
}

function decodeItem(message: BatchMessage): Item {
  try {
    return { message, change: decodePackageEvent(message.value) };
  } catch (err) {
    return { message, error: (err as Error).message };
  }
}
