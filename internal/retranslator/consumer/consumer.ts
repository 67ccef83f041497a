import type { Database } from "../../database/database.js";
import type { Logger } from "../../logger/logger.js";
import { claimEvents } from "../../repo/outbox/claim-events.js";
import type { Producer } from "../producer/producer.js";
import type { Wakeup } from "./wakeup.js";
import { failureBackoffMs } from "../../lifecycle/abortable.js";

export interface ConsumerOptions {
  owner: string;
  batchSize: number;
  leaseSeconds: number;
  pollIntervalMs: number;
}

/**
 * The claim loop: waits for a free producer slot, claims a batch, hands it
 * over; claims again at once while batches come back full, otherwise sleeps
 * until a NOTIFY, a cleaner flush, or the poll interval. A database error
 * backs off (never spins) and is retried.
 */
export async function runConsumer(
  db: Database,
  producer: Producer,
  wakeup: Wakeup,
  options: ConsumerOptions,
  logger: Logger,
  signal: AbortSignal,
  onClaimError: () => void,
): Promise<void> {
  let failures = 0;
  while (!signal.aborted) {
    await producer.waitForSlot(signal);
    if (signal.aborted) break;
    let claimed = 0;
    try {
      const batch = await claimEvents(db, options.owner, options.batchSize, options.leaseSeconds);
      claimed = batch.length;
      failures = 0;
      if (signal.aborted && batch.length > 0) {
        // Claimed while stopping: still handed over, so that the
        // retranslator's drain publishes or releases it like the rest.
        producer.submit(batch);
        break;
      }
      if (batch.length > 0) producer.submit(batch);
    } catch (err) {
      failures += 1;
      onClaimError();
      logger.warn({ err }, "claim failed; backing off");
      await wakeup.wait(failureBackoffMs(failures), signal);
      continue;
    }
    if (claimed < options.batchSize) await wakeup.wait(options.pollIntervalMs, signal);
  }
}
