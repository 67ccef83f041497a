import { sleep } from "../lifecycle/abortable.js";
import type { Logger } from "../logger/logger.js";
import type { PackageRepository } from "./package-repo.js";

export interface KeySweeperOptions {
  retentionSeconds: number;
  intervalMs: number;
  batchSize: number;
}

/** Upper bound of batches per tick, so one tick cannot run unbounded. */
const maxBatchesPerTick = 100;

/**
 * Deletes expired idempotency keys in batches until `signal` aborts. Expired
 * keys are already ignored by createOnce, so the sweep only keeps the table
 * small; a failure is logged and retried on the next tick.
 */
export async function runKeySweeper(
  repo: PackageRepository,
  options: KeySweeperOptions,
  logger: Logger,
  signal: AbortSignal,
): Promise<void> {
  while (!signal.aborted) {
    try {
      let deleted = 0;
      for (let i = 0; i < maxBatchesPerTick && !signal.aborted; i++) {
        const n = await repo.deleteExpiredKeys(options.retentionSeconds, options.batchSize);
        deleted += n;
        if (n < options.batchSize) break;
      }
      if (deleted > 0) logger.info({ deleted }, "expired idempotency keys deleted");
    } catch (err) {
      logger.warn({ err }, "idempotency key sweep failed; retrying next interval");
    }
    await sleep(options.intervalMs, signal);
  }
}
