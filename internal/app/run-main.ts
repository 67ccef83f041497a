import { type Config, ConfigError, loadConfig } from "../config/config.js";
import { createLogger, type Logger } from "../logger/logger.js";
import { startTelemetry } from "../tracer/telemetry.js";
import type { Binary } from "./scaffold.js";
import { versionInfo } from "./version.js";

interface Stoppable {
  stop(): Promise<void>;
  /** Re-reads what can change without a restart (certificates, tokens): SIGHUP. */
  reload?(): void;
}

/**
 * Entry shared by the binaries (cmd/<binary>/main.ts): config (a bad key stops
 * start-up with its name, exit 2), logger, tracing, then `start` (the binary's
 * start-<binary>.ts on the scaffold), and a graceful stop on the first
 * SIGTERM/SIGINT (bounded by the scaffold's deadline); a second signal forces exit.
 */
export async function runMain(
  name: Binary,
  start: (config: Readonly<Config>, logger: Logger) => Promise<Stoppable>,
): Promise<void> {
  let config: Readonly<Config>;
  // A bad key, or a value start-up finds wrong (a rejected bot token): one line on stderr, exit 2.
  const exitOnConfigError = (err: unknown) => {
    if (!(err instanceof ConfigError)) return;
    process.stderr.write(`${name}: invalid configuration: ${err.message}\n`);
    process.exit(2);
  };
  try {
    config = loadConfig();
  } catch (err) {
    exitOnConfigError(err);
    throw err;
  }
  const logger = createLogger({ name: `${config.project.name}/${name}`, level: config.log.level });
  // Before anything opens a database connection: the pg instrumentation patches the driver.
  const telemetry = await startTelemetry({
    serviceName: `${config.project.name}/${name}`,
    serviceVersion: versionInfo().version,
    otlpEndpoint: config.tracing.otlpEndpoint,
  });
  if (telemetry.enabled) logger.info({ endpoint: config.tracing.otlpEndpoint }, "tracing on");

  // Handlers go in before start: a SIGTERM during a slow start (a consumer
  // group join, migrations) must still lead to a graceful stop, not a kill.
  let app: Stoppable | undefined;
  let pendingSignal: NodeJS.Signals | undefined;
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, "second signal: exiting now");
      logger.flush();
      process.exit(130);
    }
    if (app === undefined) {
      logger.info({ signal }, "signal during start: stopping as soon as started");
      pendingSignal = signal;
      return;
    }
    stop(app, signal);
  };
  const stop = (running: Stoppable, signal: NodeJS.Signals) => {
    logger.info({ signal }, "shutting down");
    // Once stopped, nothing is owed any more: a client library's pending
    // requests (a Kafka request to a hung broker, until its timeout) must not
    // keep the process alive past the shutdown deadline.
    const exitSoon = () => setTimeout(() => process.exit(), 500).unref();
    running
      .stop()
      // Spans of a stop that failed are the ones worth reading: exported either way.
      .finally(() => telemetry.shutdown())
      .then(
        () => {
          logger.info("stopped");
          logger.flush();
          process.exitCode = 0;
          exitSoon();
        },
        (err: unknown) => {
          logger.error({ err }, "shutdown failed");
          logger.flush();
          process.exitCode = 1;
          exitSoon();
        },
      );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  // Without a handler SIGHUP would kill the process; with one, it reloads.
  const onHangup = () => {
    logger.info({ signal: "SIGHUP" }, "reloading");
    app?.reload?.();
  };
  process.on("SIGHUP", onHangup);

  try {
    app = await start(config, logger);
  } catch (err) {
    logger.flush();
    exitOnConfigError(err);
    logger.fatal({ err }, `${name} failed to start`);
    logger.flush();
    await telemetry.shutdown();
    process.exitCode = 1;
    // The signal handlers would otherwise keep nothing alive, but say so plainly.
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    process.off("SIGHUP", onHangup);
    return;
  }
  if (pendingSignal !== undefined) stop(app, pendingSignal);
}
