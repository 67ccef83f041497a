// An in-memory outbox with the semantics the relay relies on (internal/outbox/ in Postgres):
// claims take package heads and the unleased run after them (a lease that ran out counts as none:
// the claim takes it over), outcomes change a row only while it
// carries the claim's owner and lease, attempts are counted at claim and given back as the SQL does.
// Backoff has no jitter here, so tests can reason about it.

import type { Backlog } from "../../../internal/outbox/backlog.js";
import type { Claim, ClaimRequest } from "../../../internal/outbox/claim-events.js";
import type { BackoffPolicy } from "../../../internal/outbox/release-events.js";
import type { ClaimRef, EventFailure, OutboxEvent } from "../../../internal/outbox/types.js";
import type { Outbox } from "../../../internal/retranslator/outbox.js";

export interface OutboxRowState {
  event: OutboxEvent;
  lockedBy: string | null;
  /** Epoch ms. */
  lockedUntil: number | null;
  availableAt: number;
  retries: number;
  lastError: string | null;
}

type Method = keyof Outbox;

export class MemoryOutbox implements Outbox {
  /** In id order (ids are handed out increasing). */
  readonly rows = new Map<bigint, OutboxRowState>();
  readonly deadLetters = new Map<bigint, OutboxRowState>();
  /** Outcome rows that named a claim the row no longer carries (changed nothing, as in SQL). */
  staleOutcomes = 0;
  claims = 0;
  /** Above this many rows readBacklog says its figure is an estimate (BACKLOG_EXACT_UP_TO in Postgres). */
  backlogExactUpTo = Number.POSITIVE_INFINITY;
  /** Every package a claim was asked to pass over (ClaimRequest.skipPackages). */
  readonly skippedPackages = new Set<bigint>();
  private nextId = 1n;
  private leaseSerial = 0;
  private readonly failures = new Map<Method, number>();

  /** Commits `count` events of `packageId`; returns their ids. */
  write(packageId: bigint, count = 1, attempts = 0): bigint[] {
    const ids: bigint[] = [];
    for (let i = 0; i < count; i++) {
      const id = this.nextId++;
      ids.push(id);
      this.rows.set(id, {
        event: {
          id,
          packageId,
          type: "Updated",
          payload: `{"id":"${packageId}"}`,
          created: new Date(),
          traceparent: null,
          tracestate: null,
          reason: null,
          attempts,
          lease: "",
        },
        lockedBy: null,
        lockedUntil: null,
        availableAt: 0,
        retries: 0,
        lastError: null,
      });
    }
    return ids;
  }

  /** The next `times` calls of `method` reject (a database outage). */
  failNext(method: Method, times = 1): void {
    this.failures.set(method, times);
  }

  /**
   * Every leased row passes to `owner` under a new claim, at once: as if the
   * leases ran out while their relay stalled and another instance's claim
   * took them over. Returns their ids.
   */
  takeOverLeases(owner: string, leaseSeconds = 30): bigint[] {
    const lease = `lease-${++this.leaseSerial}`;
    const taken = this.leased;
    for (const row of taken) {
      row.lockedBy = owner;
      row.lockedUntil = Date.now() + leaseSeconds * 1000;
      row.event = { ...row.event, attempts: row.event.attempts + 1, lease };
    }
    return taken.map((r) => r.event.id);
  }

  get leased(): OutboxRowState[] {
    return [...this.rows.values()].filter((r) => r.lockedBy !== null);
  }

  async claimHeads(request: ClaimRequest): Promise<Claim> {
    await this.maybeFail("claimHeads");
    this.claims += 1;
    const now = Date.now();
    const skip = new Set(request.skipPackages ?? []);
    for (const p of skip) this.skippedPackages.add(p);
    const maxVisits = request.maxVisits ?? Math.max(1000, request.limit * 4);
    const byPackage = new Map<bigint, OutboxRowState[]>();
    for (const row of this.rows.values()) {
      const list = byPackage.get(row.event.packageId) ?? [];
      list.push(row);
      byPackage.set(row.event.packageId, list);
    }
    const packages = [...byPackage.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const start = request.cursor === undefined ? 0 : packages.findIndex((p) => p > request.cursor!);
    const walk = start <= 0 ? packages : [...packages.slice(start), ...packages.slice(0, start)];
    const lease = `lease-${++this.leaseSerial}`;
    const events: OutboxEvent[] = [];
    // The walk of the SQL, row by row: `total` counts what each package's take
    // counted (any of its events within the room, leased or not), and once it
    // reaches the limit the walk looks ahead, taking nothing, for a claimable head.
    let total = 0;
    let visited = 0;
    let cursor = request.cursor ?? 0n;
    let cutShort = false;
    let more = false;
    let takenOver = 0;
    // A lease that ran out counts as none (its relay died or stalled): the claim takes it over.
    const free = (row: OutboxRowState) => row.lockedBy === null || row.lockedUntil! < now;
    for (const packageId of walk) {
      if (visited >= maxVisits) break;
      visited += 1;
      const ahead = total >= request.limit;
      const list = byPackage.get(packageId)!;
      const head = list[0]!;
      const claimable =
        free(head) &&
        head.availableAt <= now &&
        !skip.has(packageId) &&
        ![...this.deadLetters.values()].some((d) => d.event.packageId === packageId);
      const room = request.limit - total;
      const counted = claimable ? Math.min(list.length, room + 1) : 0;
      const take = Math.min(counted, room);
      const rowMore = counted > room;
      total += take;
      if (ahead) {
        if (rowMore) {
          more = true;
          break;
        }
        continue;
      }
      cursor = packageId;
      cutShort = rowMore;
      // Only the unleased run from the head among those counted, as the SQL's "chosen".
      for (const row of list.slice(0, take)) {
        if (!free(row)) break;
        if (row.lockedBy !== null) {
          takenOver += 1;
          row.lastError ??= "lease expired";
        }
        row.lockedBy = request.owner;
        row.lockedUntil = now + request.leaseSeconds * 1000;
        row.event = { ...row.event, attempts: row.event.attempts + 1, lease };
        events.push({ ...row.event });
      }
    }
    return { events, cursor, visited, takenOver, cutShort, more };
  }

  async deleteEvents(ids: readonly bigint[]): Promise<number> {
    await this.maybeFail("deleteEvents");
    let n = 0;
    for (const id of ids) if (this.rows.delete(id)) n += 1;
    return n;
  }

  async deadLetterEvents(owner: string, failures: readonly EventFailure[]): Promise<number> {
    await this.maybeFail("deadLetterEvents");
    let n = 0;
    for (const f of failures) {
      const row = this.ownRow(owner, f);
      if (row === undefined) continue;
      this.rows.delete(f.id);
      this.deadLetters.set(f.id, { ...row, lastError: f.error });
      n += 1;
    }
    return n;
  }

  async releaseFailedEvents(owner: string, failures: readonly EventFailure[], backoff: BackoffPolicy): Promise<number> {
    await this.maybeFail("releaseFailedEvents");
    let n = 0;
    for (const f of failures) {
      const row = this.ownRow(owner, f);
      if (row === undefined) continue;
      row.availableAt = Date.now() + Math.min(backoff.maxMs, backoff.minMs * 2 ** row.retries);
      row.retries += 1;
      row.lastError = f.error;
      if (f.retriable) row.event = { ...row.event, attempts: Math.max(row.event.attempts - 1, 0) };
      this.unlock(row);
      n += 1;
    }
    return n;
  }

  async releaseUnsentEvents(owner: string, claims: readonly ClaimRef[]): Promise<number> {
    await this.maybeFail("releaseUnsentEvents");
    let n = 0;
    for (const c of claims) {
      const row = this.ownRow(owner, c);
      if (row === undefined) continue;
      row.event = { ...row.event, attempts: Math.max(row.event.attempts - 1, 0) };
      this.unlock(row);
      n += 1;
    }
    return n;
  }

  async readBacklog(): Promise<Backlog> {
    await this.maybeFail("readBacklog");
    const oldest = this.rows.values().next().value?.event.created;
    // Counted exactly whatever the size, only flagged as an estimate above backlogExactUpTo:
    // the estimate itself is Postgres' (test/outbox-backlog.test.ts).
    return {
      events: this.rows.size,
      eventsEstimated: this.rows.size > this.backlogExactUpTo,
      oldestAgeSeconds: oldest === undefined ? 0 : (Date.now() - oldest.getTime()) / 1000,
      deadLetters: this.deadLetters.size,
      deadLettersEstimated: this.deadLetters.size > this.backlogExactUpTo,
    };
  }

  private ownRow(owner: string, claim: ClaimRef): OutboxRowState | undefined {
    const row = this.rows.get(claim.id);
    if (row === undefined) return undefined;
    if (row.lockedBy !== owner || row.event.lease !== claim.lease) {
      this.staleOutcomes += 1;
      return undefined;
    }
    return row;
  }

  private unlock(row: OutboxRowState): void {
    row.lockedBy = null;
    row.lockedUntil = null;
  }

  /**
   * Every method first yields to the event loop, as a round trip to Postgres
   * would: a relay loop that found nothing to wait for must still let timers
   * (and the test) run.
   */
  private async maybeFail(method: Method): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    const left = this.failures.get(method) ?? 0;
    if (left === 0) return;
    this.failures.set(method, left - 1);
    throw new Error(`${method}: connection terminated (injected)`);
  }
}
