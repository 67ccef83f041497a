/**
 * A sleep that another part of the process can end early: a loop sleeps until
 * its interval passes, its signal aborts, or new work calls wake().
 *
 * Level-triggered: a wake() while nobody sleeps is remembered and ends the next
 * sleep at once, so work that arrives between a loop's check and its sleep (a
 * NOTIFY after a claim, a message queued during a send) is not left waiting a
 * whole interval. The cost is at most one extra turn of the loop.
 */
export class Wakeup {
  private pending = false;
  private sleeper: (() => void) | undefined;

  wake(): void {
    this.pending = true;
    this.sleeper?.();
  }

  /**
   * Forgets a wake() that came while nobody slept. For a loop about to look
   * at everything anew: the relay's claim sees every commit, acknowledgement
   * and give-back made before it starts, so a wake() for one of them would
   * only buy an empty claim after it. Wakes that come after this call are kept.
   */
  clear(): void {
    this.pending = false;
  }

  /**
   * Resolves on wake(), after `ms` (never when undefined), or when `signal`
   * aborts; at once when a wake() came since the last sleep or the signal has
   * already aborted. One sleeper at a time: the loop that owns this Wakeup.
   */
  sleep(ms: number | undefined, signal: AbortSignal): Promise<void> {
    if (this.sleeper !== undefined) throw new Error("Wakeup.sleep: another sleep is in progress");
    if (this.pending || signal.aborted) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.sleeper = undefined;
        this.pending = false;
        resolve();
      };
      const timer = ms === undefined ? undefined : setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
      this.sleeper = done;
    });
  }
}
