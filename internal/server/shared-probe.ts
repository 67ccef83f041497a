/**
 * One readiness probe shared by every asker (/ready, gRPC health Check and
 * every Watch stream): a result is reused for `maxAgeMs` after its probe
 * started, and askers that arrive while a probe runs wait for that one. So a
 * flood of probes, or hundreds of watchers, costs at most one database ping per
 * `maxAgeMs` in total, and never more than one at a time.
 */
export class SharedProbe {
  private last: { startedAt: number; error: unknown } | undefined;
  private inFlight: Promise<void> | undefined;

  constructor(
    private readonly probe: () => Promise<void>,
    private readonly maxAgeMs: number,
    /** Called once per real probe (a metric), never per asker. */
    private readonly onProbe: () => void = () => {},
  ) {}

  /** Resolves while the latest probe succeeded; rejects with its error otherwise. */
  check(): Promise<void> {
    const last = this.last;
    if (last !== undefined && performance.now() - last.startedAt < this.maxAgeMs) {
      return last.error === undefined ? Promise.resolve() : Promise.reject(last.error);
    }
    this.inFlight ??= this.run();
    return this.inFlight;
  }

  private async run(): Promise<void> {
    const startedAt = performance.now();
    this.onProbe();
    try {
      await this.probe();
      this.last = { startedAt, error: undefined };
    } catch (err) {
      this.last = { startedAt, error: err };
      throw err;
    } finally {
      this.inFlight = undefined;
    }
  }
}
