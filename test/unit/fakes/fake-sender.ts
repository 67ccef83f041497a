// A Sender without Kafka: routes a package to partition packageId % partitions (so tests know where
// each package lands), acknowledges what the test lets through, and records every request. Failures
// follow the real sender's contract (sender/sender.ts): a failed event's later events of the same
// package in the request come back unsent; an event past its sendBy is never sent.

import type { OutboxEvent } from "../../../internal/outbox/types.js";
import {
  failAll,
  type Sender,
  type SentOutcome,
  type SharedOutcome,
} from "../../../internal/retranslator/sender/sender.js";

export interface EventFault {
  error: string;
  retriable: boolean;
  deadLetter?: boolean;
}

export interface SentRequest {
  partition: number;
  ids: bigint[];
  startedAt: number;
}

export class FakeSender implements Sender {
  /** Acknowledged events, in acknowledgement order. */
  readonly published: OutboxEvent[] = [];
  readonly requests: SentRequest[] = [];
  /** Events handed to send() after their sendBy: a fencing violation. */
  readonly sentLate: OutboxEvent[] = [];
  /** Partitions whose every request fails as retriable (no leader). */
  readonly leaderless = new Set<number>();
  /** Decides an event's failure; undefined lets it through. */
  fault: (event: OutboxEvent) => EventFault | undefined = () => undefined;
  /** Awaited at the start of every request (a slow or stalled broker). */
  delay: (partition: number) => Promise<void> = async () => undefined;
  routeError: Error | undefined;
  closed = false;

  /** Requests shared by several partitions (sendTogether), each with its partitions. */
  readonly sharedRequests: { partitions: number[]; ids: bigint[] }[] = [];
  /**
   * With `shared`, the fake offers sendTogether like the Kafka sender: a
   * shared request fails as a whole when any partition in it is leader-less
   * or any event in it has a fault (the broker may have appended the others,
   * which `appendOnSharedFailure` makes it do).
   */
  sendTogether?: (groups: ReadonlyMap<number, readonly OutboxEvent[]>) => Promise<SharedOutcome>;
  appendOnSharedFailure = false;

  constructor(
    readonly partitions = 3,
    options: { shared?: boolean } = {},
  ) {
    if (options.shared) this.sendTogether = (groups) => this.sendShared(groups);
  }

  private async sendShared(groups: ReadonlyMap<number, readonly OutboxEvent[]>): Promise<SharedOutcome> {
    const all = [...groups.values()].flat();
    const now = Date.now();
    this.sentLate.push(...all.filter((e) => e.sendBy !== undefined && e.sendBy < now));
    this.sharedRequests.push({ partitions: [...groups.keys()], ids: all.map((e) => e.id) });
    for (const partition of groups.keys()) await this.delay(partition);
    const failing = [...groups].filter(
      ([partition, events]) => this.leaderless.has(partition) || events.some((e) => this.fault(e) !== undefined),
    );
    if (failing.length === 0) {
      this.published.push(...all);
      return {
        published: new Map([...groups].map(([p, events]) => [p, [...events]])),
        requests: 1,
        failedRequests: 0,
      };
    }
    if (this.appendOnSharedFailure) {
      for (const [partition, events] of groups)
        if (!failing.some(([p]) => p === partition)) this.published.push(...events);
    }
    return { published: new Map(), requests: 1, failedRequests: 1 };
  }

  partitionOf(packageId: bigint): number {
    return Number(packageId % BigInt(this.partitions));
  }

  /** The published ids of one package, in acknowledgement order. */
  publishedOf(packageId: bigint): bigint[] {
    return this.published.filter((e) => e.packageId === packageId).map((e) => e.id);
  }

  async route(events: readonly OutboxEvent[]): Promise<Map<number, OutboxEvent[]>> {
    if (this.routeError !== undefined) throw this.routeError;
    const routed = new Map<number, OutboxEvent[]>();
    for (const event of events) {
      const partition = this.partitionOf(event.packageId);
      routed.set(partition, [...(routed.get(partition) ?? []), event]);
    }
    return routed;
  }

  async send(events: readonly OutboxEvent[], partition = 0): Promise<SentOutcome> {
    const now = Date.now();
    this.sentLate.push(...events.filter((e) => e.sendBy !== undefined && e.sendBy < now));
    this.requests.push({ partition, ids: events.map((e) => e.id), startedAt: now });
    await this.delay(partition);
    // One request per send, failed when any event of it fails (counted as the KafkaSender counts).
    if (this.leaderless.has(partition))
      return { ...failAll(events, "LEADER_NOT_AVAILABLE (fake)", true), requests: { made: 1, failed: 1 } };
    const outcome: SentOutcome = { published: [], failed: [], unsent: [], requests: { made: 1, failed: 0 } };
    const failedPackages = new Set<bigint>();
    for (const event of events) {
      const fault = failedPackages.has(event.packageId) ? undefined : this.fault(event);
      if (failedPackages.has(event.packageId)) outcome.unsent.push(event);
      else if (fault !== undefined) {
        failedPackages.add(event.packageId);
        outcome.failed.push({ event, ...fault });
      } else outcome.published.push(event);
    }
    if (outcome.failed.length > 0) outcome.requests.failed = 1;
    this.published.push(...outcome.published);
    return outcome;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
