/**
 * The one way to bound a wait: a stop that must not hang on a peer (a Kafka
 * disconnect, connections that do not close), a probe that must answer in time.
 * The timer is cleared as soon as the wait ends, so none keeps the process alive.
 */

/**
 * True when `promise` fulfils within `ms`, false when `ms` passes first (the
 * promise goes on, unobserved). A rejection within `ms` rejects: handle the
 * promise's errors before passing it when they only need logging.
 */
export async function settleWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true as const), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** `promise`'s value, or the error `onTimeout` makes when `ms` passes first. */
export async function withDeadline<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
