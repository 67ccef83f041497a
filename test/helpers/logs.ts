import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../internal/logger/logger.js";

export interface CapturedLogs {
  logger: Logger;
  /** Every JSON line written so far, parsed. */
  lines: Record<string, unknown>[];
}

/** A real pino logger whose lines are kept for assertions instead of printed. */
export function captureLogs(level: "info" | "debug" | "warn" = "info"): CapturedLogs {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString("utf8").split("\n")) {
        if (line.trim() !== "") lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  return { logger: createLogger({ name: "test", level, destination: sink }), lines };
}
