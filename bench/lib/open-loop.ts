import { sleep } from "./procs.js";

export interface OpenLoopOptions {
  /** Calls per second the schedule asks for. */
  rate: number;
  seconds: number;
  /** Past this many calls in flight the schedule slips (counted as late) instead of piling up. */
  maxInFlight: number;
  /** Call number n (1-based). */
  call: (n: number) => Promise<unknown>;
  /** Every 5 s: calls completed and in flight so far. */
  onProgress?: (completed: number, inFlight: number) => void;
}

export interface OpenLoopResult {
  issued: number;
  errors: number;
  firstError?: string;
  /** Calls sent 10 ms or more after their time in the schedule (the server could not keep up). */
  late: number;
  /** Each completed call's own time, ms, sorted. */
  latencies: number[];
  /** From the first call to the last one's completion. */
  loadSeconds: number;
}

/**
 * An open loop: calls go out on a fixed schedule (`rate` per second), whether
 * or not the earlier ones have returned, as independent clients would send
 * them; what a closed loop cannot show (a server that falls behind a rate)
 * shows here as late calls and latency. The schedule is checked every 2 ms,
 * so calls leave in small groups, as they would from many clients.
 */
export async function openLoop(o: OpenLoopOptions): Promise<OpenLoopResult> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  let issued = 0;
  let inFlight = 0;
  let late = 0;
  const calls: Promise<void>[] = [];
  const started = performance.now();
  const end = started + o.seconds * 1000;
  let lastReport = started;
  // Bounded by the clock; each pass sends what the schedule says is due.
  while (performance.now() < end) {
    const now = performance.now();
    const due = Math.floor(((now - started) / 1000) * o.rate);
    while (issued < due && inFlight < o.maxInFlight) {
      if (now - (started + (issued * 1000) / o.rate) >= 10) late += 1;
      issued += 1;
      inFlight += 1;
      const t = performance.now();
      calls.push(
        o
          .call(issued)
          .then(
            () => void latencies.push(performance.now() - t),
            (err: unknown) => {
              errors += 1;
              firstError ??= (err as Error).message;
            },
          )
          .finally(() => (inFlight -= 1)),
      );
    }
    if (now - lastReport >= 5000) {
      lastReport = now;
      o.onProgress?.(latencies.length, inFlight);
    }
    await sleep(2);
  }
  await Promise.all(calls);
  const result: OpenLoopResult = {
    issued,
    errors,
    late,
    latencies: latencies.sort((a, b) => a - b),
    loadSeconds: (performance.now() - started) / 1000,
  };
  if (firstError !== undefined) result.firstError = firstError;
  return result;
}
