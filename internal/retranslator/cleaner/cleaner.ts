import type { Database } from "../../database/database.js";
import { failureBackoffMs } from "../../lifecycle/abortable.js";
import type { Logger } from "../../logger/logger.js";
import { deadLetterEvents } from "../../repo/outbox/dead-letter-events.js";
import { deleteEvents } from "../../repo/outbox/delete-events.js";
import { type BackoffPolicy, releaseFailedEvents, releaseUnsentEvents } from "../../repo/outbox/release-events.js";
import type { ClaimRef, EventFailure } from "../../repo/outbox/types.js";

export interface CleanerOptions {
  owner: string;
  batchSize: number;
  flushIntervalMs: number;
  maxAttempts: number;
  backoff: BackoffPolicy;
}

export interface CleanerHooks {
  /**
   * Rows left the outbox (`deleted`, their ids) or were given back
   * (`released`): later events of their packages may now be claimable.
   */
  onProgress(deleted: readonly bigint[], released: boolean): void;
  onDeadLettered(count: number): void;
  onRetryScheduled(count: number): void;
}

/**
 * Acknowledges outcomes in sets: published ids are deleted with one statement
 * per flush, failures are released with backoff or moved to the dead-letter
 * table. Flushes follow one another without a pause while work is queued, so
 * sets grow with the load while each flush runs (group commit); an idle
 * cleaner waits flushIntervalMs after the first outcome. Deleting early
 * matters: a package's next event is claimable only once its predecessor has
 * left the outbox. A database error keeps the work queued and retries it;
 * nothing is dropped. The only loop is `run`, owned by the retranslator,
 * which awaits it on stop.
 */
export class Cleaner {
  private published: bigint[] = [];
  private failures: EventFailure[] = [];
  private failureAttempts = new Map<bigint, number>();
  private unsent: ClaimRef[] = [];
  /** Set while the loop sleeps: ends the sleep early once `wakeWhen` holds. */
  private wake: { done: () => void; wakeWhen: () => boolean } | undefined;
  private flushing = false;

  constructor(
    private readonly db: Database,
    private readonly options: CleanerOptions,
    private readonly hooks: CleanerHooks,
    private readonly logger: Logger,
  ) {}

  addPublished(ids: readonly bigint[]): void {
    this.published.push(...ids);
    this.poke();
  }

  addFailed(failures: readonly (EventFailure & { attempts: number })[]): void {
    for (const f of failures) {
      this.failures.push({
        id: f.id,
        error: f.error,
        retriable: f.retriable,
        deadLetter: f.deadLetter,
        lease: f.lease,
      });
      this.failureAttempts.set(f.id, f.attempts);
    }
    this.poke();
  }

  addUnsent(claims: readonly ClaimRef[]): void {
    this.unsent.push(...claims);
    this.poke();
  }

  get pending(): number {
    return this.published.length + this.failures.length + this.unsent.length;
  }

  /** Flushes until `signal` aborts, then once more until everything is written or `drainUntil` passes. */
  async run(signal: AbortSignal, drainDeadline: () => number): Promise<void> {
    let failuresInARow = 0;
    while (!signal.aborted) {
      if (failuresInARow > 0) await this.sleep(failureBackoffMs(failuresInARow), signal, () => false);
      else if (this.pending === 0) {
        await this.sleep(undefined, signal, () => this.pending > 0);
        // A short linger turns a trickle of single-event sends into fewer deletes.
        if (this.options.flushIntervalMs > 0) {
          await this.sleep(this.options.flushIntervalMs, signal, () => !this.onlyFewPublished());
        }
      }
      failuresInARow = (await this.flush()) ? 0 : failuresInARow + 1;
    }
    failuresInARow = 0;
    while (this.pending > 0 && Date.now() < drainDeadline()) {
      if (await this.flush()) continue;
      failuresInARow += 1;
      await new Promise((r) =>
        setTimeout(r, Math.min(failureBackoffMs(failuresInARow), Math.max(0, drainDeadline() - Date.now()))),
      );
    }
  }

  /** Writes everything queued; false when the database failed (the work stays queued). */
  async flush(): Promise<boolean> {
    if (this.flushing) return true;
    this.flushing = true;
    try {
      let progressed = false;
      let released = false;
      let deleted: bigint[] = [];
      if (this.published.length > 0) {
        const ids = this.published.slice(0, this.options.batchSize);
        await deleteEvents(this.db, ids);
        this.published.splice(0, ids.length);
        deleted = ids;
        progressed = true;
      }
      if (this.failures.length > 0) {
        const batch = this.failures.slice();
        // The dead-letter policy, in one place: an event that can never be sent
        // goes at once; one that failed by itself, once it has used maxAttempts;
        // an outage (retriable) never.
        const exhausted = (f: EventFailure) =>
          !f.retriable && (f.deadLetter === true || (this.failureAttempts.get(f.id) ?? 0) >= this.options.maxAttempts);
        const dead = batch.filter(exhausted);
        const retry = batch.filter((f) => !exhausted(f));
        const deadCount = await deadLetterEvents(this.db, this.options.owner, dead);
        const retryCount = await releaseFailedEvents(this.db, this.options.owner, retry, this.options.backoff);
        this.failures.splice(0, batch.length);
        for (const f of batch) this.failureAttempts.delete(f.id);
        if (deadCount > 0) {
          this.logger.warn(
            { events: dead.map((f) => ({ id: f.id.toString(), error: f.error })) },
            "events moved to the dead-letter table",
          );
          this.hooks.onDeadLettered(deadCount);
        }
        this.hooks.onRetryScheduled(retryCount);
        progressed = true;
        released = true;
      }
      if (this.unsent.length > 0) {
        const ids = this.unsent.slice();
        await releaseUnsentEvents(this.db, this.options.owner, ids);
        this.unsent.splice(0, ids.length);
        progressed = true;
        released = true;
      }
      if (progressed) this.hooks.onProgress(deleted, released);
      return true;
    } catch (err) {
      this.logger.warn({ err, pending: this.pending }, "outbox acknowledgement failed; retrying");
      return false;
    } finally {
      this.flushing = false;
    }
  }

  private onlyFewPublished(): boolean {
    return this.failures.length === 0 && this.unsent.length === 0 && this.published.length < this.options.batchSize;
  }

  private poke(): void {
    if (this.wake?.wakeWhen()) this.wake.done();
  }

  /** Until `ms` passes (forever when undefined), `signal` aborts, or an add*() makes `wakeWhen` true. */
  private sleep(ms: number | undefined, signal: AbortSignal, wakeWhen: () => boolean): Promise<void> {
    if (signal.aborted || wakeWhen()) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (timer !== undefined) clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.wake = undefined;
        resolve();
      };
      const timer = ms === undefined ? undefined : setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
      this.wake = { done, wakeWhen };
    });
  }
}
