import { settleWithin } from "../lifecycle/deadline.js";
import { Wakeup } from "../lifecycle/wakeup.js";
import type { Logger } from "../logger/logger.js";
import { Acknowledger } from "./acknowledger.js";
import { runClaimLoop } from "./claim-loop.js";
import { InFlightPool } from "./in-flight-pool.js";
import { runMaintenance } from "./maintenance.js";
import type { RetranslatorMetrics } from "./metrics.js";
import { runNotifyListener } from "./notify-listener.js";
import type { Outbox } from "./outbox.js";
import type { Sender } from "./sender/sender.js";

export interface RetranslatorOptions {
  /** Unique per process: leases name their owner. */
  owner: string;
  /** For the LISTEN connection (when listenNotify). */
  databaseUrl: string;
  /** The LISTEN connection's name in pg_stat_activity, like the pools' (scaffold's applicationName). */
  listenApplicationName: string;
  batchSize: number;
  maxInFlightBatches: number;
  leaseSeconds: number;
  /** The longest one send can take (sendBudgetMs of the Kafka settings); at most the lease. */
  sendBudgetMs: number;
  pollIntervalMs: number;
  claimLingerMs: number;
  listenNotify: boolean;
  maxAttempts: number;
  retryBackoffMinMs: number;
  retryBackoffMaxMs: number;
  /** The acknowledger's (config: retranslator.cleanerBatchSize, cleanerFlushIntervalMs). */
  cleanerBatchSize: number;
  cleanerFlushIntervalMs: number;
  shutdownTimeoutMs: number;
  maintenanceIntervalMs: number;
}

/**
 * Calls `onNotify` for each commit of new events until `signal` aborts (with
 * listenNotify): LISTEN on a connection of its own (notify-listener.ts),
 * or, in tests, notifications the test sends.
 */
export type NotificationSource = (onNotify: () => void, logger: Logger, signal: AbortSignal) => Promise<void>;

/** After a shared request failed: per-partition requests for this long (see InFlightPoolOptions). */
const SHARED_REQUEST_PAUSE_MS = 30_000;

export interface RunningRetranslator {
  /**
   * Stops claiming, lets in-flight sends finish within shutdownTimeoutMs,
   * writes their outcomes, then releases every lease still held.
   */
  stop(): Promise<void>;
}

/** claim loop → in-flight pool (a lane per partition) → sender → acknowledger, with one owner for every loop. */
export function startRetranslator(
  outbox: Outbox,
  sender: Sender,
  options: RetranslatorOptions,
  metrics: RetranslatorMetrics,
  logger: Logger,
  notifications: NotificationSource = (onNotify, log, signal) =>
    runNotifyListener(options.databaseUrl, options.listenApplicationName, onNotify, log, signal),
): RunningRetranslator {
  const claiming = new AbortController();
  const acknowledging = new AbortController();
  const wakeup = new Wakeup();
  // Claimed events of packages that have more events than their claim took
  // (the last package of a claim that filled up inside it, claim.cutShort). After a claim that found little, the
  // claim loop sleeps until new events are committed (NOTIFY), events are
  // given back, or one of these is acknowledged: other acknowledgements free
  // packages with nothing left to claim, and waking for them only makes
  // empty claims (each walking every leased head).
  const awaited = new Set<bigint>();
  // A NOTIFY whose claim took nothing: the new events sit behind heads in flight (an update
  // committed while its package's create is being sent). Their packages are not known here,
  // so the next acknowledgement of anything wakes the claim loop once; without it those
  // events would wait for pollIntervalMs.
  let notified = false;
  let notifiedBeforeClaim = false;
  let wakeOnNextAck = false;
  let drainDeadline = Number.POSITIVE_INFINITY;

  const acknowledger = new Acknowledger(
    outbox,
    {
      owner: options.owner,
      batchSize: options.cleanerBatchSize,
      flushIntervalMs: options.cleanerFlushIntervalMs,
      maxAttempts: options.maxAttempts,
      backoff: { minMs: options.retryBackoffMinMs, maxMs: options.retryBackoffMaxMs },
    },
    {
      onProgress: (deleted, released) => {
        let wake = released;
        if (wakeOnNextAck && deleted.length > 0) {
          wakeOnNextAck = false;
          wake = true;
        }
        if (awaited.size > 0) {
          for (const id of deleted) if (awaited.delete(id)) wake = true;
        }
        if (wake) wakeup.wake();
      },
      onDeadLettered: (n) => metrics.deadLettered.inc(n),
      onRetryScheduled: (n) => metrics.retried.inc(n),
    },
    logger,
  );
  const pool = new InFlightPool(
    metrics.instrument(sender),
    acknowledger,
    {
      maxEvents: options.maxInFlightBatches * options.batchSize,
      maxPartitionEvents: 2 * options.batchSize,
      maxAttempts: options.maxAttempts,
      backoffMinMs: options.retryBackoffMinMs,
      backoffMaxMs: options.retryBackoffMaxMs,
      sharedRequestPauseMs: SHARED_REQUEST_PAUSE_MS,
    },
    logger,
    {
      onProcessing: (delta) => metrics.processing.inc(delta),
      onFailed: (n) => metrics.failed.inc(n),
      onFenced: (n) => metrics.fenced.inc(n),
      onPartitionBackoff: (partition, ms) => metrics.partitionBackoff.set({ partition: String(partition) }, ms / 1000),
    },
  );

  const loops: Promise<void>[] = [];
  loops.push(
    runClaimLoop(
      outbox,
      pool,
      wakeup,
      {
        owner: options.owner,
        batchSize: options.batchSize,
        leaseSeconds: options.leaseSeconds,
        sendBudgetMs: options.sendBudgetMs,
        pollIntervalMs: options.pollIntervalMs,
        claimLingerMs: options.claimLingerMs,
      },
      logger,
      claiming.signal,
      () => metrics.claimErrors.inc(),
      (claimed, more) => {
        acknowledger.hold(claimed);
        // Bounded: ids of events given back rather than acknowledged are never
        // deleted; past the bound the set starts over (one extra wake-up).
        if (awaited.size > 100_000) awaited.clear();
        for (const event of more) awaited.add(event.id);
        if (notifiedBeforeClaim && claimed.length === 0 && pool.size > 0) wakeOnNextAck = true;
        metrics.claims.inc();
        metrics.claimedEvents.inc(claimed.length);
        if (claimed.length === 0) metrics.emptyClaims.inc();
      },
      () => {
        // Taken as the claim starts: a NOTIFY during the claim is for the next one.
        notifiedBeforeClaim = notified;
        notified = false;
      },
    ),
  );
  if (options.listenNotify) {
    loops.push(
      notifications(
        () => {
          notified = true;
          wakeup.wake();
        },
        logger,
        claiming.signal,
      ),
    );
  }
  loops.push(runMaintenance(outbox, options.maintenanceIntervalMs, metrics, logger, claiming.signal));
  const acknowledgerLoop = acknowledger.run(acknowledging.signal, () => drainDeadline);

  logger.info({ owner: options.owner }, "retranslator started");
  return {
    async stop() {
      drainDeadline = Date.now() + options.shutdownTimeoutMs;
      claiming.abort();
      await Promise.all(loops);
      const drained = await pool.drain(drainDeadline);
      if (!drained) logger.warn({ events: pool.size }, "in-flight sends did not finish before the deadline");
      pool.stopSending();
      // The acknowledger always gets a moment to write the outcomes of finished sends:
      // a published event whose delete is lost would be published again.
      drainDeadline = Math.max(drainDeadline, Date.now() + 2000);
      acknowledging.abort();
      await acknowledgerLoop;
      // Whatever is still ours (sends cut off, outcomes not written) goes back now.
      const released = await acknowledger.releaseHeld().catch((err: unknown) => {
        logger.error({ err }, "could not release leases; they expire after leaseSeconds");
        return 0;
      });
      // kafkajs' disconnect waits for pending requests, which a hung broker
      // holds for up to requestTimeoutMs (and retries): the stop must not wait
      // for them past its deadline. Their leases were released above.
      const closed = await settleWithin(
        sender.close().catch((err: unknown) => logger.warn({ err }, "closing the Kafka producer failed")),
        Math.max(drainDeadline - Date.now(), 1000),
      );
      if (!closed) logger.warn("the Kafka producer did not close before the deadline; leaving it behind");
      logger.info({ released, unacknowledged: acknowledger.pending }, "retranslator stopped");
    },
  };
}
