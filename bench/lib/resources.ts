/**
 * Everything the bench starts (broker, databases, child processes, temp files)
 * is registered here as it is created and closed in reverse order at the end,
 * on failure, or on SIGINT/SIGTERM. Each close runs at most once.
 */
export class Resources {
  private readonly stack: { name: string; close: () => Promise<void> }[] = [];
  private closingAll: Promise<void> | undefined;

  /** Registers `close`; the returned function closes it early (and unregisters it). */
  add(name: string, close: () => Promise<void>): () => Promise<void> {
    let done: Promise<void> | undefined;
    const entry = {
      name,
      close: () => {
        done ??= close();
        return done;
      },
    };
    this.stack.push(entry);
    return async () => {
      const i = this.stack.indexOf(entry);
      if (i >= 0) this.stack.splice(i, 1);
      await entry.close();
    };
  }

  /**
   * Closes everything, newest first. One pass at a time: a signal, the watchdog and the run's
   * own end may each ask, and two passes popping the same stack would close things out of
   * order (the broker before a relay that still uses it).
   */
  closeAll(log: (line: string) => void): Promise<void> {
    this.closingAll ??= this.closeEach(log).finally(() => {
      this.closingAll = undefined;
    });
    return this.closingAll;
  }

  private async closeEach(log: (line: string) => void): Promise<void> {
    while (this.stack.length > 0) {
      const entry = this.stack.pop()!;
      try {
        await entry.close();
      } catch (err) {
        log(`cleanup of ${entry.name} failed: ${(err as Error).message}`);
      }
    }
  }
}

/**
 * A suite's run, bounded and stoppable: after `limitMs`, or on Ctrl-C or SIGTERM (a test
 * runner's), everything `resources` holds is closed and the process exits (1 after the
 * bound, 130 after a signal); a second signal exits at once. `interrupted()` says whether a
 * signal came: a measurement failing after one failed because its resources were closed;
 * `release()` ends the guard when the run is over.
 */
export function guardRun(
  resources: Resources,
  log: (line: string) => void,
  what: string,
  limitMs: number,
): { interrupted: () => boolean; release: () => void } {
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) process.exit(130);
    log(`${signal}: stopping everything the ${what} started`);
    void resources.closeAll(log).finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const watchdog = setTimeout(() => {
    log(`the ${what} did not finish within ${limitMs / 60_000} min: stopping`);
    void resources.closeAll(log).finally(() => process.exit(1));
  }, limitMs);
  watchdog.unref();
  return {
    interrupted: () => signals > 0,
    /** The run ended: no more bound, and signals are no longer this run's. */
    release: () => {
      clearTimeout(watchdog);
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    },
  };
}
