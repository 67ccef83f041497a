import { AsyncResource } from "node:async_hooks";
import { databaseErrorKind } from "../database/pg-errors.js";
import { UnavailableError } from "../domain/errors.js";
import type { NewPackage, TraceContext } from "../domain/package.js";
import type { CreateItem } from "./package-repo.js";

export interface CreateBatchingOptions {
  /** Most creates in one statement; 1 turns batching off. */
  maxBatch: number;
  /** Create statements running at once (each holds a pooled connection). */
  maxInFlight: number;
  /** Creates waiting for a statement; beyond it a create fails at once with Unavailable. */
  maxWaiting: number;
}

/** The two create statements the batcher chooses between (PgPackageRepository's). */
export interface CreateStatements {
  /** One package and its event. */
  create(input: NewPackage, trace: TraceContext | undefined): Promise<bigint>;
  /** Several, each with its event, in one statement: ids in the order of `items`; all or none. */
  createMany(items: readonly CreateItem[]): Promise<bigint[]>;
}

interface PendingCreate {
  item: CreateItem;
  /** The caller's async context: the statement runs in it (trace spans, log fields). */
  scope: AsyncResource;
  resolve(id: bigint): void;
  reject(err: unknown): void;
}

/**
 * Group commit for creates without an idempotency key: while maxInFlight
 * create statements are running, new creates wait and then go together in
 * one statement (PgPackageRepository.createMany), so a busy server spends one
 * round trip, one transaction and one WAL flush on many packages. A create
 * that finds a slot free goes at once, alone: batching adds no latency when
 * idle. Each package still gets exactly its own event in the same
 * transaction. If a batch fails because of a row (pg-errors.ts: a data or
 * constraint error, or a trigger's exception), its creates are retried one by
 * one so that only the request at fault fails; any other failure fails the
 * whole batch. The queue holds only calls whose callers are waiting, at
 * most maxWaiting: an overloaded server answers Unavailable (retry) at once
 * instead of letting waits grow without bound, as the connection pool's
 * acquire timeout does for unbatched statements. The server's stop waits for
 * the calls in it, so nothing is dropped.
 */
export class CreateBatcher {
  private readonly queue: PendingCreate[] = [];
  private inFlight = 0;

  constructor(
    private readonly inner: CreateStatements,
    private readonly options: CreateBatchingOptions,
  ) {}

  create(input: NewPackage, trace: TraceContext | undefined): Promise<bigint> {
    if (this.options.maxBatch <= 1) return this.inner.create(input, trace);
    if (this.queue.length >= this.options.maxWaiting) {
      return Promise.reject(new UnavailableError("server busy: too many creates waiting; retry"));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ item: { input, trace }, scope: new AsyncResource("CreateBatch"), resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.options.maxInFlight && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.options.maxBatch);
      this.inFlight += 1;
      void this.write(batch).finally(() => {
        this.inFlight -= 1;
        this.pump();
      });
    }
  }

  private async write(batch: PendingCreate[]): Promise<void> {
    try {
      if (batch.length === 1) return await this.createAlone(batch[0]!);
      try {
        const ids = await batch[0]!.scope.runInAsyncScope(() => this.inner.createMany(batch.map((p) => p.item)));
        for (const [i, p] of batch.entries()) p.resolve(ids[i]!);
      } catch (err) {
        if (databaseErrorKind(err) !== "row") {
          // The database's state (unreachable, a timeout, ...): each call alone would
          // only meet it again, N times over, at the worst moment.
          for (const p of batch) p.reject(err);
          return;
        }
        // One call's row failed the statement for all: each alone, so that only it fails.
        await Promise.all(batch.map((p) => this.createAlone(p)));
      }
    } finally {
      for (const p of batch) p.scope.emitDestroy();
    }
  }

  private createAlone(p: PendingCreate): Promise<void> {
    return p.scope.runInAsyncScope(() => this.inner.create(p.item.input, p.item.trace)).then(p.resolve, p.reject);
  }
}
