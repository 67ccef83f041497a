import { type DestinationStream, type LevelWithSilent, type Logger, pino } from "pino";

export type { Logger };

export interface LoggerOptions {
  name: string;
  level: LevelWithSilent;
  /** Where JSON lines go; stdout by default. Tests pass a stream to read them back. */
  destination?: DestinationStream;
}

// Lines are gathered up to bufferBytes and written together, at the latest
// flushMs after they were logged: one write per line (each an fs.write through
// libuv's thread pool, a handoff and a wake-up) cost the grpc-server ~12% of
// its CPU at 1,000 requests/s, one access line each (docs/performance.md).
// The event loop still never blocks on stdout. On exit, pino writes what is
// left synchronously; a SIGKILL loses at most the last flushMs of lines.
const bufferBytes = 4096;
const flushMs = 100;
// While stdout does not take lines (a stalled log collector), they wait in
// memory up to this much; beyond it they are dropped, counted, rather than
// growing the process without bound.
const maxWaitingBytes = 16 * 1024 * 1024;
let dropped = 0;

/** Log lines dropped because stdout had maxWaitingBytes waiting (a metric of every binary). */
export function droppedLogLines(): number {
  return dropped;
}

/**
 * Structured JSON logs, one object per line. The base logger stays at the
 * configured level; a request that asks for debug gets a child logger whose
 * own level is lowered (see api/interceptors.ts), so other requests stay quiet.
 */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      name: options.name,
      level: options.level,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination ?? stdout(),
  );
}

function stdout() {
  const destination = pino.destination({
    dest: 1,
    sync: false,
    minLength: bufferBytes,
    periodicFlush: flushMs,
    maxLength: maxWaitingBytes,
  });
  destination.on("drop", () => {
    dropped += 1;
  });
  return destination;
}
