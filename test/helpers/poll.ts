// The one way tests wait for something that happens in the background (a
// relay's send, a process's start, a metric's change): ask again every few
// milliseconds until it holds, and fail naming what was awaited and what was
// seen last, so that a timeout says why.

function show(value: unknown): string {
  return (
    JSON.stringify(value, (_k, x: unknown) => (typeof x === "bigint" ? x.toString() : x))?.slice(0, 2000) ?? "undefined"
  );
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Calls `probe` until `ok` holds for its value, and returns that value. */
export async function poll<T>(
  what: string,
  probe: () => Promise<T> | T,
  ok: (value: T) => boolean,
  timeoutMs = 30_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value ${show(value)}`);
    }
    await pause(everyMs);
  }
}

/** Calls `probe` until it returns something other than `undefined` or `false`, and returns that. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 30_000,
  everyMs = 100,
): Promise<T> {
  const value = await poll(what, probe, (v) => v !== undefined && v !== false, timeoutMs, everyMs);
  return value as T;
}
