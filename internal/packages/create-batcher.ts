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
  /**
   * Under a steady stream of creates, the longest a create that would go alone
   * waits for others to join its statement (0 = never waits). Applies only
   * while creates arrive less than this long apart on average.
   */
  lingerMs: number;
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
 * that finds a slot free after a quiet spell goes at once, alone: batching
 * adds no latency when idle. Each package still gets exactly its own event in
 * the same transaction. If a batch fails because of a row (pg-errors.ts: a data or
 * constraint error, or a trigger's exception), its creates are retried one by
 * one so that only the request at fault fails; any other failure fails the
 * whole batch. The queue holds only calls whose callers are waiting, at
 * most maxWaiting: an overloaded server answers Unavailable (retry) at once
 * instead of letting waits grow without bound, as the connection pool's
 * acquire timeout does for unbatched statements. The server's stop waits for
 * the calls in it, so nothing is dropped.
 *
 * Under a steady stream a free slot would take each create alone (at 1,000
 * creates/s with two slots, nearly every statement held one create), and each
 * statement costs a socket write, a backend wake-up, a commit, a WAL flush and
 * the trigger's NOTIFY, which wakes the retranslator for a claim of one event.
 * So while creates arrive less than lingerMs apart on average (then a linger
 * gathers one more, on average), a create that finds a slot free and nothing
 * waiting lingers, and those arriving meanwhile join it (like Kafka's
 * linger.ms). The linger ends after lingerMs, when the batch is full, or when
 * a running statement finishes, whichever comes first: from then on the
 * lingering creates are simply waiting creates, and those go as soon as a
 * slot frees. Measured at 1,000 creates/s: docs/performance.md, "Create linger".
 */
export class CreateBatcher {
  private readonly queue: PendingCreate[] = [];
  private inFlight = 0;
  /** performance.now() of the latest create's arrival (-Infinity: none yet). */
  private lastArrival = Number.NEGATIVE_INFINITY;
  /**
   * Mean time between arrivals, ms, weighted towards the latest (about the
   * last ten); each gap counted as at most ten lingers, so that one quiet
   * spell ends the linger at once and about ten quick arrivals start it again.
   */
  private meanGapMs: number;
  private lingering: NodeJS.Timeout | undefined;

  constructor(
    private readonly inner: CreateStatements,
    private readonly options: CreateBatchingOptions,
  ) {
    this.meanGapMs = 10 * options.lingerMs;
  }

  create(input: NewPackage, trace: TraceContext | undefined): Promise<bigint> {
    if (this.options.maxBatch <= 1) return this.inner.create(input, trace);
    if (this.queue.length >= this.options.maxWaiting) {
      return Promise.reject(new UnavailableError("server busy: too many creates waiting; retry"));
    }
    const now = performance.now();
    const gap = Math.min(now - this.lastArrival, 10 * this.options.lingerMs);
    this.lastArrival = now;
    this.meanGapMs += (gap - this.meanGapMs) * 0.2;
    const steady = this.meanGapMs < this.options.lingerMs;
    return new Promise((resolve, reject) => {
      this.queue.push({ item: { input, trace }, scope: new AsyncResource("CreateBatch"), resolve, reject });
      if (this.lingering !== undefined) {
        // Joined a lingering statement: it goes when the linger ends, or now if full (or if
        // one more would be refused: createMaxWaiting may be below createBatchSize).
        if (this.queue.length >= Math.min(this.options.maxBatch, this.options.maxWaiting)) this.pump();
        return;
      }
      // (Not when the queue could hold no second create: it would be refused beside a free slot.)
      if (
        steady &&
        this.queue.length === 1 &&
        this.options.maxWaiting > 1 &&
        this.inFlight < this.options.maxInFlight
      ) {
        this.lingering = setTimeout(() => this.pump(), this.options.lingerMs);
        return;
      }
      this.pump();
    });
  }

  private pump(): void {
    // Whatever lingered goes now, with the rest.
    clearTimeout(this.lingering);
    this.lingering = undefined;
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
