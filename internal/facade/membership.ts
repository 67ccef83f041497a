/**
 * What this instance holds of its consumer group: the partitions of its last
 * assignment, and since when it has held none (at start, during a rebalance,
 * after a failure, or assigned nothing because the group has more members than
 * the topic has partitions). /ready and the metrics read it; the consumer's
 * group events write it.
 */
export class GroupMembership {
  private partitions = 0;
  private unassignedSince: number | undefined;
  private why = "not joined the consumer group yet";

  constructor(private readonly now: () => number = Date.now) {
    this.unassignedSince = now();
  }

  /** The group assigned this instance `assignment` (after each rebalance). */
  assigned(assignment: Readonly<Record<string, readonly number[]>>): void {
    const count = Object.values(assignment).reduce((n, partitions) => n + partitions.length, 0);
    if (count === 0) {
      this.lost("the group assigned this instance no partition (more instances than partitions?)");
      return;
    }
    this.partitions = count;
    this.unassignedSince = undefined;
    this.why = "";
  }

  /** The instance stopped consuming its partitions, for `reason`. An earlier start of the gap is kept. */
  lost(reason: string): void {
    this.partitions = 0;
    this.unassignedSince ??= this.now();
    this.why = reason;
  }

  get assignedPartitions(): number {
    return this.partitions;
  }

  /** How long the instance has held no partition; 0 while it holds some. */
  unassignedMs(): number {
    return this.unassignedSince === undefined ? 0 : Math.max(0, this.now() - this.unassignedSince);
  }

  /** Why /ready fails: no partition for longer than `maxUnassignedMs`; undefined otherwise. */
  notReadyReason(maxUnassignedMs: number): string | undefined {
    const ms = this.unassignedMs();
    if (this.unassignedSince === undefined || ms <= maxUnassignedMs) return undefined;
    return `no partition assigned for ${Math.round(ms / 1000)} s (facade.maxUnassignedMs is ${maxUnassignedMs} ms): ${this.why}`;
  }
}
