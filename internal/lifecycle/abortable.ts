/**
 * Waits shared by the background loops. Each ends early on abort, and one
 * started after the abort returns at once: an abort event that fired during
 * the loop's work will not fire again to end the wait.
 */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

export function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/**
 * Backoff after `failuresInARow` failures of a dependency (database, broker
 * connection): 100 ms, 200 ms, … capped at 5 s, so that no loop spins on an
 * error and recovery is noticed within seconds.
 */
export function failureBackoffMs(failuresInARow: number): number {
  return Math.min(5000, 100 * 2 ** Math.min(Math.max(failuresInARow - 1, 0), 6));
}
