import type { Database } from "../database/database.js";
import { sleep } from "../lifecycle/abortable.js";
import type { Logger } from "../logger/logger.js";
import { deleteOldInbox } from "./repo/delete-old-inbox.js";

export interface InboxRetentionOptions {
  retentionHours: number;
  intervalMs: number;
  batchSize: number;
  /** Upper bound of batches per sweep, so that one sweep cannot run unbounded. */
  maxBatchesPerSweep?: number;
}

export interface SweepResult {
  deleted: number;
  /** DELETE statements run (the last one found fewer than batchSize rows, or hit the bound). */
  batches: number;
}

/**
 * One sweep: deletes old inbox rows batch after batch (each its own short
 * statement, so no long lock or transaction) until a batch finds fewer than
 * batchSize rows, the bound is reached, or `signal` aborts.
 */
export async function sweepInbox(
  db: Database,
  options: InboxRetentionOptions,
  signal: AbortSignal,
  onDeleted: (rows: number) => void = () => undefined,
): Promise<SweepResult> {
  const maxBatches = options.maxBatchesPerSweep ?? 1000;
  const result: SweepResult = { deleted: 0, batches: 0 };
  while (result.batches < maxBatches && !signal.aborted) {
    const n = await deleteOldInbox(db, options.retentionHours, options.batchSize);
    result.batches += 1;
    result.deleted += n;
    if (n > 0) onDeleted(n);
    if (n < options.batchSize) break;
  }
  return result;
}

/**
 * The inbox retention loop, owned by the facade app (which aborts `signal` and
 * awaits it at stop): a sweep every intervalMs. Only the inbox shrinks; the
 * read model keeps each package's last_event_id, so a copy of an event whose
 * inbox row is gone is still recognised as older than the state (stale) and
 * changes nothing. A failed sweep is logged and tried again next interval.
 */
export async function runInboxRetention(
  db: Database,
  options: InboxRetentionOptions,
  onDeleted: (rows: number) => void,
  logger: Logger,
  signal: AbortSignal,
): Promise<void> {
  while (!signal.aborted) {
    try {
      const { deleted, batches } = await sweepInbox(db, options, signal, onDeleted);
      if (deleted > 0) {
        logger.info({ deleted, batches, retentionHours: options.retentionHours }, "old inbox rows deleted");
      }
    } catch (err) {
      logger.warn({ err }, "inbox retention sweep failed; retrying next interval");
    }
    await sleep(options.intervalMs, signal);
  }
}
