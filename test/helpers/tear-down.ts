/** Tear-down steps, run last added first whatever happened before; a failing step does not stop the rest. */
export class TearDown {
  private readonly steps: (() => Promise<unknown> | unknown)[] = [];

  defer(step: () => Promise<unknown> | unknown): void {
    this.steps.push(step);
  }

  /** Runs every step once; returns the errors of those that failed. */
  async run(): Promise<unknown[]> {
    const failures: unknown[] = [];
    for (let step = this.steps.pop(); step !== undefined; step = this.steps.pop()) {
      try {
        await step();
      } catch (err) {
        failures.push(err);
      }
    }
    return failures;
  }
}
