// Runs the real relay (startRetranslator: claim loop, in-flight pool, acknowledger) against a
// MemoryOutbox and a FakeSender, with short intervals so that a test takes milliseconds.

import { afterEach } from "node:test";
import { Registry } from "prom-client";
import { untilAborted } from "../../../internal/lifecycle/abortable.js";
import { RetranslatorMetrics } from "../../../internal/retranslator/metrics.js";
import {
  type NotificationSource,
  type RetranslatorOptions,
  type RunningRetranslator,
  startRetranslator,
} from "../../../internal/retranslator/retranslator.js";
import { type CapturedLogs, captureLogs } from "../../helpers/logs.js";
import { poll } from "../../helpers/poll.js";
import type { FakeSender } from "./fake-sender.js";
import type { MemoryOutbox } from "./memory-outbox.js";

export const relayDefaults: RetranslatorOptions = {
  owner: "relay-1",
  databaseUrl: "",
  listenApplicationName: "",
  batchSize: 8,
  maxInFlightBatches: 4,
  leaseSeconds: 30,
  sendBudgetMs: 1000,
  pollIntervalMs: 10,
  claimLingerMs: 0,
  listenNotify: false,
  maxAttempts: 3,
  retryBackoffMinMs: 5,
  retryBackoffMaxMs: 20,
  cleanerBatchSize: 100,
  cleanerFlushIntervalMs: 0,
  shutdownTimeoutMs: 2000,
  maintenanceIntervalMs: 20,
};

export interface TestRelay {
  running: RunningRetranslator;
  metrics: RetranslatorMetrics;
  logs: CapturedLogs;
  /** A counter's or gauge's value (summed over its labels). */
  value(metric: keyof RetranslatorMetrics): Promise<number>;
}

export function startTestRelay(
  outbox: MemoryOutbox,
  sender: FakeSender,
  options: Partial<RetranslatorOptions> = {},
  notifications?: NotificationSource,
): TestRelay {
  const metrics = new RetranslatorMetrics(new Registry());
  const logs = captureLogs("warn");
  const running = startRetranslator(
    outbox,
    sender,
    { ...relayDefaults, ...options },
    metrics,
    logs.logger,
    ...(notifications === undefined ? [] : [notifications]),
  );
  return {
    running,
    metrics,
    logs,
    async value(metric) {
      const m = metrics[metric] as { get(): Promise<{ values: { value: number }[] }> };
      return (await m.get()).values.reduce((sum, v) => sum + v.value, 0);
    },
  };
}

/**
 * For a test file of relay tests: `start` runs a relay that is stopped after
 * each test, `soon` polls every 5 ms for at most 5 s (a relay round takes
 * about a millisecond here), `drained` waits for an empty outbox.
 */
export function relayTestKit() {
  const relays: TestRelay[] = [];
  afterEach(async () => {
    await Promise.all(relays.splice(0).map((r) => r.running.stop()));
  });
  const soon = <T>(what: string, probe: () => T | Promise<T>, ok: (value: T) => boolean) =>
    poll(what, probe, ok, 5000, 5);
  return {
    start(
      outbox: MemoryOutbox,
      sender: FakeSender,
      options: Partial<RetranslatorOptions> = {},
      notifications?: NotificationSource,
    ): TestRelay {
      const relay = startTestRelay(outbox, sender, options, notifications);
      relays.push(relay);
      return relay;
    },
    /** Forgets a relay the test stopped itself. */
    forget(relay: TestRelay): void {
      relays.splice(relays.indexOf(relay), 1);
    },
    soon,
    drained: (outbox: MemoryOutbox) =>
      soon(
        "an empty outbox",
        () => outbox.rows.size,
        (n) => n === 0,
      ),
  };
}

/** Writes `events` events for each of packages 1..`packages`; returns each package's ids. */
export function writeMany(outbox: MemoryOutbox, packages: number, events: number): Map<bigint, bigint[]> {
  const ids = new Map<bigint, bigint[]>();
  for (let p = 1n; p <= BigInt(packages); p++) ids.set(p, outbox.write(p, events));
  return ids;
}

/**
 * NOTIFY without Postgres: `source` goes to the relay (with listenNotify),
 * `notify()` is a commit's notification arriving.
 */
export function testNotifications(): { source: NotificationSource; notify(): void } {
  let listener: (() => void) | undefined;
  return {
    source: (onNotify, _logger, signal) => {
      listener = onNotify;
      return untilAborted(signal);
    },
    notify() {
      if (listener === undefined) throw new Error("the relay is not listening");
      listener();
    },
  };
}
