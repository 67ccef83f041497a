import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { OutboxEvent } from "../outbox/types.js";
import type { Sender, SentOutcome } from "./sender/sender.js";

/** The retranslator's metrics (docs/design.md §5, docs/operations.md); the first name is the original service's. */
export class RetranslatorMetrics {
  readonly processing: Gauge;
  readonly published: Counter;
  readonly failed: Counter;
  readonly retried: Counter;
  readonly deadLettered: Counter;
  readonly claimErrors: Counter;
  readonly backlog: Gauge;
  readonly oldestAge: Gauge;
  readonly deadLetters: Gauge;
  readonly countsEstimated: Gauge;
  readonly publishLatency: Histogram;
  readonly claims: Counter;
  readonly claimedEvents: Counter;
  readonly emptyClaims: Counter;
  readonly partitionBackoff: Gauge<"partition">;
  readonly fenced: Counter;
  readonly readinessProbes: Counter;
  readonly slo: Gauge;
  readonly publishedAgainstSlo: Counter<"result">;
  readonly produceRequests: Counter<"partitions" | "result">;
  /** The last oldest-event age the maintenance loop read (all instances' outbox). */
  oldestAgeSeconds = 0;
  private sloSeconds = Number.POSITIVE_INFINITY;

  constructor(registry: Registry) {
    const registers = [registry];
    this.produceRequests = new Counter({
      name: "logistic_package_api_retranslator_produce_requests_total",
      help: "Produce requests: partitions=one (one partition's events; each request of a send split by size or retried package by package counts) or shared (several partitions led by one broker); result=published or failed (a shared one that failed is sent again partition by partition)",
      labelNames: ["partitions", "result"],
      registers,
    });
    this.processing = new Gauge({
      name: "logistic_package_api_retranslator_events_processing",
      help: "Events claimed by this retranslator and not yet acknowledged or released",
      registers,
    });
    this.published = new Counter({
      name: "logistic_package_api_retranslator_events_published_total",
      help: "Events acknowledged by Kafka (acks=all)",
      registers,
    });
    this.failed = new Counter({
      name: "logistic_package_api_retranslator_events_failed_total",
      help: "Publish attempts that failed",
      registers,
    });
    this.retried = new Counter({
      name: "logistic_package_api_retranslator_events_retried_total",
      help: "Failed events given back with backoff for another attempt",
      registers,
    });
    this.deadLettered = new Counter({
      name: "logistic_package_api_retranslator_events_dead_lettered_total",
      help: "Events moved to the dead-letter table after their last attempt",
      registers,
    });
    this.claimErrors = new Counter({
      name: "logistic_package_api_retranslator_claim_errors_total",
      help: "Claims that failed (database unavailable or erroring)",
      registers,
    });
    this.backlog = new Gauge({
      name: "logistic_package_api_retranslator_outbox_backlog_events",
      help: "Events in the outbox (not yet published), all instances together; exact up to 100000, above it an estimate from Postgres statistics, never below 100000",
      registers,
    });
    this.oldestAge = new Gauge({
      name: "logistic_package_api_retranslator_outbox_oldest_event_age_seconds",
      help: "Age of the oldest unpublished event",
      registers,
    });
    this.deadLetters = new Gauge({
      name: "logistic_package_api_retranslator_dead_letters",
      help: "Events in the dead-letter table, waiting for an operator; exact up to 100000, above it an estimate",
      registers,
    });
    this.countsEstimated = new Gauge({
      name: "logistic_package_api_retranslator_outbox_count_estimated",
      help: "1 while the table's gauge (table=outbox: outbox_backlog_events, table=dead_letters: dead_letters) is an estimate (above 100000 rows), 0 while it is an exact count",
      labelNames: ["table"],
      registers,
    });
    this.slo = new Gauge({
      name: "logistic_package_api_retranslator_slo_seconds",
      help: "retranslator.sloSeconds: the commit → broker ack objective (alerts and the dashboard compare against it)",
      registers,
    });
    this.publishedAgainstSlo = new Counter({
      name: "logistic_package_api_retranslator_published_slo_total",
      help: "Events acknowledged by the broker within (result=within) or after (result=over) the SLO since their commit",
      labelNames: ["result"],
      registers,
    });
    for (const result of ["within", "over"]) this.publishedAgainstSlo.inc({ result }, 0);
    this.publishLatency = new Histogram({
      name: "logistic_package_api_retranslator_publish_latency_seconds",
      help: "From the event's commit to the broker's acknowledgement",
      buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.readinessProbes = new Counter({
      name: "logistic_package_api_retranslator_readiness_probes_total",
      help: "Database pings of /ready (shared by concurrent probes, cached for status.readinessCacheMs)",
      registers,
    });
    // Claim efficiency: events per claim = claimed_events_total / claims_total;
    // a high share of empty claims means the relay polls a blocked or idle outbox.
    this.claims = new Counter({
      name: "logistic_package_api_retranslator_claims_total",
      help: "Claims made (statements that leased events, or found none)",
      registers,
    });
    this.claimedEvents = new Counter({
      name: "logistic_package_api_retranslator_claimed_events_total",
      help: "Events leased by claims",
      registers,
    });
    this.emptyClaims = new Counter({
      name: "logistic_package_api_retranslator_empty_claims_total",
      help: "Claims that leased nothing (idle outbox, or every package blocked)",
      registers,
    });
    this.fenced = new Counter({
      name: "logistic_package_api_retranslator_events_fenced_total",
      help: "Events given back unsent because their lease had less than a whole send's time left",
      registers,
    });
    this.partitionBackoff = new Gauge({
      name: "logistic_package_api_retranslator_partition_backoff_seconds",
      help: "Backoff a Kafka partition started after a retriable failure (0 = sending normally)",
      labelNames: ["partition"],
      registers,
    });
  }

  setSlo(seconds: number): void {
    this.sloSeconds = seconds;
    this.slo.set(seconds);
  }

  recordOldestAge(seconds: number): void {
    this.oldestAgeSeconds = seconds;
    this.oldestAge.set(seconds);
  }

  /** Wraps a sender so that publishing is measured without touching its code. */
  instrument(sender: Sender): Sender {
    const together = sender.sendTogether?.bind(sender);
    return {
      route: (events) => sender.route(events),
      send: async (events: readonly OutboxEvent[], partition?: number): Promise<SentOutcome> => {
        const outcome = await sender.send(events, partition);
        const { requests } = outcome;
        if (requests.made > requests.failed)
          this.produceRequests.inc({ partitions: "one", result: "published" }, requests.made - requests.failed);
        if (requests.failed > 0) this.produceRequests.inc({ partitions: "one", result: "failed" }, requests.failed);
        this.observePublished(outcome.published);
        this.failed.inc(outcome.failed.length);
        return outcome;
      },
      ...(together === undefined
        ? {}
        : {
            sendTogether: async (groups: ReadonlyMap<number, readonly OutboxEvent[]>) => {
              const outcome = await together(groups);
              if (outcome.requests > outcome.failedRequests)
                this.produceRequests.inc(
                  { partitions: "shared", result: "published" },
                  outcome.requests - outcome.failedRequests,
                );
              if (outcome.failedRequests > 0)
                this.produceRequests.inc({ partitions: "shared", result: "failed" }, outcome.failedRequests);
              for (const events of outcome.published.values()) this.observePublished(events);
              return outcome;
            },
          }),
      close: () => sender.close(),
    };
  }

  private observePublished(events: readonly OutboxEvent[]): void {
    const now = Date.now();
    let over = 0;
    for (const event of events) {
      const seconds = Math.max(0, now - event.created.getTime()) / 1000;
      this.publishLatency.observe(seconds);
      if (seconds > this.sloSeconds) over += 1;
    }
    this.publishedAgainstSlo.inc({ result: "within" }, events.length - over);
    if (over > 0) this.publishedAgainstSlo.inc({ result: "over" }, over);
    this.published.inc(events.length);
  }
}
