import type { Logger } from "../../logger/logger.js";
import type { ClaimRef, EventFailure, OutboxEvent } from "../../repo/outbox/types.js";
import type { Cleaner } from "../cleaner/cleaner.js";
import type { Sender } from "../sender/sender.js";

/**
 * A bounded pool of batches in flight. Batches never share a package (a
 * package's later events are not claimable while an earlier one is leased),
 * so they can be sent concurrently without breaking per-package order.
 */
export class Producer {
  private readonly inFlight = new Set<Promise<void>>();
  private slotFreed: (() => void) | undefined;

  constructor(
    private readonly sender: Sender,
    private readonly cleaner: Cleaner,
    private readonly maxInFlight: number,
    /** Claims without an outcome beyond this (crash loops) dead-letter without another send. */
    private readonly maxAttempts: number,
    private readonly logger: Logger,
    private readonly onProcessing: (delta: number) => void,
  ) {}

  /** Resolves when another batch may be submitted (or `signal` aborts). */
  async waitForSlot(signal: AbortSignal): Promise<void> {
    while (this.inFlight.size >= this.maxInFlight && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const done = () => {
          signal.removeEventListener("abort", done);
          this.slotFreed = undefined;
          resolve();
        };
        this.slotFreed = done;
        signal.addEventListener("abort", done, { once: true });
      });
    }
  }

  submit(batch: readonly OutboxEvent[]): void {
    this.onProcessing(batch.length);
    const task = this.publish(batch).finally(() => {
      this.inFlight.delete(task);
      this.onProcessing(-batch.length);
      this.slotFreed?.();
    });
    this.inFlight.add(task);
  }

  /** Waits for in-flight batches, at most until `deadline` (epoch ms). True when all finished. */
  async drain(deadline: number): Promise<boolean> {
    while (this.inFlight.size > 0) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.inFlight]),
        new Promise((r) => {
          timer = setTimeout(r, left);
        }),
      ]);
      clearTimeout(timer);
    }
    return true;
  }

  get size(): number {
    return this.inFlight.size;
  }

  private async publish(claimed: readonly OutboxEvent[]): Promise<void> {
    const batch = this.withoutExhausted(claimed);
    if (batch.length === 0) return;
    try {
      const outcome = await this.sender.send(batch);
      this.cleaner.addPublished(outcome.published.map((e) => e.id));
      this.cleaner.addFailed(
        outcome.failed.map((f) => ({
          id: f.event.id,
          lease: f.event.lease,
          attempts: f.event.attempts,
          error: f.error,
          retriable: f.retriable,
        })),
      );
      this.cleaner.addUnsent(outcome.unsent.map(claimRef));
      if (outcome.failed.length > 0) {
        this.logger.warn(
          { failed: outcome.failed.length, unsent: outcome.unsent.length, error: outcome.failed[0]!.error },
          "publish failed; events will be retried",
        );
      }
    } catch (err) {
      // A sender must report failures in its outcome; if one throws anyway,
      // nothing was acknowledged: give the batch back unchanged.
      this.logger.error({ err }, "sender threw; releasing the batch");
      this.cleaner.addUnsent(batch.map(claimRef));
    }
  }

  /**
   * An event claimed more often than maxAttempts without a recorded outcome
   * has taken its relay down (or stalled it past the lease) that many times:
   * it goes to the dead-letter table instead of being sent again, and its
   * package's later events in this batch wait behind it.
   */
  private withoutExhausted(batch: readonly OutboxEvent[]): OutboxEvent[] {
    const blocked = new Set<bigint>();
    const dead: (EventFailure & { attempts: number })[] = [];
    const unsent: ClaimRef[] = [];
    const rest: OutboxEvent[] = [];
    for (const event of batch) {
      if (blocked.has(event.packageId)) unsent.push(claimRef(event));
      else if (event.attempts > this.maxAttempts) {
        blocked.add(event.packageId);
        dead.push({
          id: event.id,
          lease: event.lease,
          attempts: event.attempts,
          error: `claimed ${event.attempts - 1} times without an outcome: a retranslator crashed or stalled past its lease while publishing it`,
          retriable: false,
        });
      } else rest.push(event);
    }
    if (dead.length > 0) {
      this.cleaner.addFailed(dead);
      this.cleaner.addUnsent(unsent);
    }
    return dead.length > 0 ? rest : [...batch];
  }
}

const claimRef = (event: OutboxEvent): ClaimRef => ({ id: event.id, lease: event.lease });
