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

/**
 * Jittered exponential backoff after `failures` failures in a row: the n-th
 * waits between half and all of min × 2^(n-1), capped at max. The jitter keeps
 * peers that failed together (a broker restart: the members of a group, the
 * lanes of a relay) from retrying in lockstep.
 */
export function jitteredBackoffMs(
  failures: number,
  minMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(Math.max(failures - 1, 0), 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
