import { Counter, Gauge, type Registry } from "prom-client";
import type { Batch, BatchApplier, BatchOutcome } from "./applier.js";

/** The facade's metrics, on its own registry and port. */
export class FacadeMetrics {
  readonly applied: Counter;
  readonly duplicates: Counter;
  readonly stale: Counter;
  readonly rejected: Counter;
  readonly batchFailures: Counter;
  readonly lag: Gauge<"topic" | "partition">;
  private readonly lagLabels = new Map<string, { topic: string; partition: string }>();

  constructor(registry: Registry) {
    const registers = [registry];
    this.applied = new Counter({
      name: "logistic_package_api_facade_events_applied_total",
      help: "Events whose state the read model now holds",
      registers,
    });
    this.duplicates = new Counter({
      name: "logistic_package_api_facade_duplicates_skipped_total",
      help: "Messages taken in before (redelivered copies), skipped",
      registers,
    });
    this.stale = new Counter({
      name: "logistic_package_api_facade_stale_events_ignored_total",
      help: "Events older than the state already held, ignored",
      registers,
    });
    this.rejected = new Counter({
      name: "logistic_package_api_facade_rejected_total",
      help: "Unusable messages recorded in facade_rejected and passed over",
      registers,
    });
    this.batchFailures = new Counter({
      name: "logistic_package_api_facade_batch_failures_total",
      help: "Batches whose transaction failed (rolled back, offsets kept, retried)",
      registers,
    });
    this.lag = new Gauge({
      name: "logistic_package_api_facade_consumer_lag",
      help: "Messages in the partition after the last one applied (high watermark - next offset), per assigned partition",
      labelNames: ["topic", "partition"],
      registers,
    });
  }

  /** Wraps an applier so that outcomes, failures and lag are measured without touching its code. */
  instrument(applier: BatchApplier): BatchApplier {
    return {
      apply: async (batch: Batch): Promise<BatchOutcome> => {
        let result: BatchOutcome;
        try {
          result = await applier.apply(batch);
        } catch (err) {
          this.batchFailures.inc();
          throw err;
        }
        const counters = { applied: this.applied, duplicate: this.duplicates, stale: this.stale, rejected: this.rejected };
        for (const outcome of result.outcomes) counters[outcome.kind].inc();
        const last = batch.messages[batch.messages.length - 1];
        if (last !== undefined) {
          const labels = { topic: batch.topic, partition: String(batch.partition) };
          this.lagLabels.set(`${labels.topic}:${labels.partition}`, labels);
          this.lag.set(labels, Math.max(0, Number(BigInt(batch.highWatermark) - BigInt(last.offset) - 1n)));
        }
        return result;
      },
    };
  }

  /** After a rebalance: partitions this instance no longer owns stop reporting a lag. */
  retainPartitions(assigned: Readonly<Record<string, readonly number[]>>): void {
    for (const [key, labels] of this.lagLabels) {
      if (!(assigned[labels.topic] ?? []).includes(Number(labels.partition))) {
        this.lag.remove(labels);
        this.lagLabels.delete(key);
      }
    }
  }
}
