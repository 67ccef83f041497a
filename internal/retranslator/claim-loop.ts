import { failureBackoffMs, sleep } from "../lifecycle/abortable.js";
import type { Wakeup } from "../lifecycle/wakeup.js";
import type { Logger } from "../logger/logger.js";
import type { OutboxEvent } from "../outbox/types.js";
import type { InFlightPool } from "./in-flight-pool.js";
import type { Outbox } from "./outbox.js";

export interface ClaimLoopOptions {
  owner: string;
  batchSize: number;
  leaseSeconds: number;
  pollIntervalMs: number;
  /** After a short, non-empty claim: the least wait before the next one (like Kafka's linger.ms). */
  claimLingerMs: number;
  /** The longest one send can take (see sender/send-budget.ts): sends start only while this much lease is left. */
  sendBudgetMs: number;
}

export const EXPIRED_LEASES_TAKEN_OVER = "claimed events whose lease had run out (a retranslator died or stalled)";

/**
 * The claim loop: waits for room in the in-flight pool, claims a batch
 * (package heads, walking on from where the previous claim stopped, so every
 * package gets its turn), hands it to the pool; claims again at once while
 * batches come back full and the claim saw a claimable head beyond them
 * (claim.more), otherwise sleeps until a NOTIFY, an acknowledgement that frees
 * more, or the poll interval. A full claim that saw nothing claimable beyond
 * it left only heads that are blocked (in flight, backing off) or none, as the
 * last claim of a drain does: claiming again at once would only be empty.
 * After a short claim that found a few events it also lingers claimLingerMs:
 * under a steady stream of commits (one NOTIFY each) that claims several commits' events at once
 * instead of one claim, send and delete per commit (measured: about a tenth
 * of the relay's CPU at 1,000 creates/s, a quarter of Postgres' at 150/s). An empty claim (nothing
 * new, or everything claimable held back behind events in flight) and a full
 * one do not linger, so a drain is not slowed. A database error backs off (never spins)
 * and is retried.
 */
export async function runClaimLoop(
  outbox: Outbox,
  pool: InFlightPool,
  wakeup: Wakeup,
  options: ClaimLoopOptions,
  logger: Logger,
  signal: AbortSignal,
  onClaimError: () => void,
  /** After each claim, before its events go to the pool: the events it took, and those of the package it cut short (claim.cutShort). */
  onClaim: (claimed: readonly OutboxEvent[], cutShort: readonly OutboxEvent[]) => void = () => undefined,
  /** Right before each claim statement. */
  beforeClaim: () => void = () => undefined,
): Promise<void> {
  let failures = 0;
  let cursor: bigint | undefined;
  const leastVisits = Math.max(1000, options.batchSize * 4);
  while (!signal.aborted) {
    await pool.waitForSlot(signal);
    if (signal.aborted) break;
    let claimed = 0;
    let walkedAll = true;
    let more = false;
    try {
      // Whatever woke us so far is visible to this claim (see Wakeup.clear).
      wakeup.clear();
      beforeClaim();
      // Every package with an event in flight has its head leased, and the walk
      // passes over each: room for those beside the claim's own, so that a
      // claim (or its look-ahead) is not cut short by what we ourselves hold.
      const maxVisits = Math.max(leastVisits, 2 * options.batchSize + pool.size);
      // Measured before the statement: the lease the database writes starts later, never earlier.
      const sendBy = Date.now() + options.leaseSeconds * 1000 - options.sendBudgetMs;
      const claim = await outbox.claimHeads({
        owner: options.owner,
        limit: options.batchSize,
        leaseSeconds: options.leaseSeconds,
        cursor,
        skipPackages: pool.blockedPackages(),
        maxVisits,
      });
      const batch = claim.events;
      for (const event of batch) event.sendBy = sendBy;
      // Heads another instance's claim held as this walk came by were passed over like
      // leased ones, so a walk that meets another's takes the packages after it, and both go on.
      cursor = claim.cursor;
      claimed = batch.length;
      more = claim.more;
      // A walk cut short by maxVisits (most packages blocked) has more packages to look at.
      walkedAll = claim.visited < maxVisits;
      // A claim that stopped inside its last package (the cursor): that
      // package's next events become claimable once these are acknowledged.
      onClaim(batch, claim.cutShort ? batch.filter((e) => e.packageId === claim.cursor) : []);
      if (claim.takenOver > 0) logger.warn({ events: claim.takenOver }, EXPIRED_LEASES_TAKEN_OVER);
      failures = 0;
      if (signal.aborted && batch.length > 0) {
        // Claimed while stopping: still handed over, so that the
        // retranslator's drain publishes or releases it like the rest.
        pool.submit(batch);
        break;
      }
      if (batch.length > 0) pool.submit(batch);
    } catch (err) {
      failures += 1;
      onClaimError();
      logger.warn({ err }, "claim failed; backing off");
      await wakeup.sleep(failureBackoffMs(failures), signal);
      continue;
    }
    const full = claimed >= options.batchSize;
    if (walkedAll && !(full && more)) {
      await wakeup.sleep(options.pollIntervalMs, signal);
      if (claimed > 0 && !full && options.claimLingerMs > 0) await sleep(options.claimLingerMs, signal);
    }
  }
}
