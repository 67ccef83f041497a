import { sleep } from "../lifecycle/abortable.js";
import type { Logger } from "../logger/logger.js";
import type { RetranslatorMetrics } from "./metrics.js";
import type { Outbox } from "./outbox.js";

/**
 * The relay's housekeeping, every `intervalMs` until `signal` aborts:
 * refreshes the outbox gauges (backlog, oldest event's age, dead letters) that
 * the alerts and /ready's "degraded" read. (Leases whose owner died need no
 * housekeeping: the claim takes over a lease that ran out.) A failure is
 * logged and retried next interval; it never stops the relay.
 */
export async function runMaintenance(
  outbox: Outbox,
  intervalMs: number,
  metrics: RetranslatorMetrics,
  logger: Logger,
  signal: AbortSignal,
): Promise<void> {
  while (!signal.aborted) {
    try {
      const backlog = await outbox.readBacklog();
      metrics.backlog.set(backlog.events);
      metrics.recordOldestAge(backlog.oldestAgeSeconds);
      metrics.deadLetters.set(backlog.deadLetters);
      metrics.countsEstimated.set({ table: "outbox" }, backlog.eventsEstimated ? 1 : 0);
      metrics.countsEstimated.set({ table: "dead_letters" }, backlog.deadLettersEstimated ? 1 : 0);
    } catch (err) {
      logger.warn({ err }, "outbox maintenance failed; retrying next interval");
    }
    await sleep(intervalMs, signal);
  }
}
