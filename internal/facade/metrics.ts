import { Counter, Gauge, type Registry } from "prom-client";
import type { Batch, BatchApplier, BatchOutcome } from "./applier.js";
import type { GroupMembership } from "./membership.js";

/** The facade's metrics, on its own registry and port. */
export class FacadeMetrics {
  readonly applied: Counter;
  readonly duplicates: Counter;
  readonly stale: Counter;
  readonly rejected: Counter;
  readonly batchFailures: Counter;
  readonly lag: Gauge<"topic" | "partition">;
  readonly rebalances: Counter;
  readonly restarts: Counter;
  readonly inboxDeleted: Counter;
  private readonly lagLabels = new Map<string, { topic: string; partition: string }>();

  constructor(registry: Registry, membership: GroupMembership) {
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
    this.rebalances = new Counter({
      name: "logistic_package_api_facade_rebalances_total",
      help: "Group joins this instance completed (one per rebalance it took part in, the first join included)",
      registers,
    });
    this.restarts = new Counter({
      name: "logistic_package_api_facade_consumer_restarts_total",
      help: "Times the consumer failed (retries exhausted) and was started again after a backoff",
      registers,
    });
    this.inboxDeleted = new Counter({
      name: "logistic_package_api_facade_inbox_deleted_total",
      help: "Inbox rows deleted by the retention (older than facade.inboxRetentionHours)",
      registers,
    });
    new Gauge({
      name: "logistic_package_api_facade_unassigned_seconds",
      help: "How long this instance has held no partition (0 while it holds some): start, rebalances, failures",
      registers,
      collect() {
        this.set(membership.unassignedMs() / 1000);
      },
    });
    new Gauge({
      name: "logistic_package_api_facade_assigned_partitions",
      help: "Partitions of the topic assigned to this instance by its last rebalance (0 while it holds none)",
      registers,
      collect() {
        this.set(membership.assignedPartitions);
      },
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
        const counters = {
          applied: this.applied,
          duplicate: this.duplicates,
          stale: this.stale,
          rejected: this.rejected,
        };
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
