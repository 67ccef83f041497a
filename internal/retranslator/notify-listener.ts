import pg from "pg";
import { failureBackoffMs, sleep, untilAborted } from "../lifecycle/abortable.js";
import type { Logger } from "../logger/logger.js";

/**
 * Holds one dedicated connection with LISTEN package_event and calls
 * `onNotify` for each notification, reconnecting with backoff when the
 * connection drops. Polling stays the floor, so a lost notification only
 * costs latency, never an event.
 */
export async function runNotifyListener(
  databaseUrl: string,
  applicationName: string,
  onNotify: () => void,
  logger: Logger,
  signal: AbortSignal,
): Promise<void> {
  let failures = 0;
  while (!signal.aborted) {
    const client = new pg.Client({
      connectionString: databaseUrl,
      application_name: applicationName,
      keepAlive: true,
    });
    const ended = new Promise<void>((resolve) => {
      client.once("error", (err) => {
        logger.warn({ err }, "LISTEN connection failed");
        resolve();
      });
      client.once("end", () => resolve());
    });
    try {
      await client.connect();
      client.on("notification", () => onNotify());
      await client.query("LISTEN package_event");
      failures = 0;
      // Anything committed while we were away is picked up by this poke.
      onNotify();
      await Promise.race([ended, untilAborted(signal)]);
    } catch (err) {
      logger.warn({ err }, "LISTEN connection failed");
    } finally {
      await client.end().catch(() => undefined);
    }
    if (signal.aborted) break;
    failures += 1;
    await sleep(failureBackoffMs(failures), signal);
  }
}
