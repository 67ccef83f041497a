// `npm run admin -- COMMAND …`: operator commands against database.url (DATABASE_URL).
// `--help` lists them. Exit codes: 0 done, 1 the command failed (e.g. not found),
// 2 bad arguments (nothing was done), 130 interrupted (republish --all: resume
// with the --after-id it prints).
import { parseArgs } from "node:util";
import { openDatabase } from "../../internal/app/scaffold.js";
import { loadConfig } from "../../internal/config/config.js";
import type { Database } from "../../internal/database/database.js";
import { NotFoundError } from "../../internal/domain/errors.js";
import { discardDeadLetter, listDeadLetters, requeueDeadLetter } from "../../internal/outbox/dead-letter-admin.js";
import {
  countRepublishable,
  type RepublishFilter,
  republishBatch,
  republishPackage,
} from "../../internal/packages/republish.js";

const usage = `usage: npm run admin -- COMMAND [OPTIONS]

Commands:
  dead-letters [--limit N]      list dead letters, oldest first, with their last error (N: 1..10000, default 100)
  requeue ID                    put dead letter ID back: it is published next, then its package's parked events
  discard ID                    drop dead letter ID for good: its package's parked events flow again
  republish --package ID        write an event carrying package ID's current state (type Updated,
                                Kafka header event-reason: republish), ordered after its earlier events
  republish --all               the same for every live package, in batches by id; Ctrl-C stops after
                                the current batch and prints where to resume
    --since TIMESTAMP           only packages created or updated at or after TIMESTAMP (ISO 8601)
    --after-id N                (--all) start after package id N: resume an interrupted run
    --batch-size N              (--all) packages per transaction (1..10000, default 1000)
    --dry-run                   write nothing: print how many packages would be republished

Options:
  -h, --help                    this text

Exit codes: 0 done, 1 failed (e.g. not found), 2 bad arguments, 130 interrupted.`;

/** Bad arguments: printed with a pointer to --help, exit 2, nothing done. */
class UsageError extends Error {}

const positiveId = (name: string, value: string | undefined): bigint => {
  // ids are bigint identities: positive, at most 19 digits (int8).
  if (value === undefined || !/^[1-9][0-9]{0,18}$/.test(value) || BigInt(value) > 9223372036854775807n) {
    throw new UsageError(
      `${name} must be a positive id, got ${value === undefined ? "nothing" : JSON.stringify(value)}`,
    );
  }
  return BigInt(value);
};

const boundedInt = (name: string, value: string | undefined, fallback: number, max: number): number => {
  if (value === undefined) return fallback;
  if (!/^[0-9]+$/.test(value) || Number(value) < 1 || Number(value) > max) {
    throw new UsageError(`${name} must be an integer from 1 to ${max}, got ${JSON.stringify(value)}`);
  }
  return Number(value);
};

const timestamp = (value: string): Date => {
  // ISO 8601 only: Date.parse accepts many locale-ish forms that would be guessed at.
  const iso = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$/;
  const date = new Date(value);
  // Date rolls impossible days over (02-30 becomes 03-02): the calendar date must exist as written.
  const [y, m, d] = value.slice(0, 10).split("-").map(Number) as [number, number, number];
  const day = new Date(Date.UTC(y, m - 1, d));
  const realDay = day.getUTCFullYear() === y && day.getUTCMonth() === m - 1 && day.getUTCDate() === d;
  if (!iso.test(value) || !realDay || Number.isNaN(date.getTime())) {
    throw new UsageError(
      `--since must be an ISO 8601 timestamp (e.g. 2026-11-30T09:00:00Z), got ${JSON.stringify(value)}`,
    );
  }
  return date;
};

type Command =
  | { name: "help" }
  | { name: "dead-letters"; limit: number }
  | { name: "requeue" | "discard"; id: bigint }
  | {
      name: "republish";
      target: { package: bigint } | { all: true; afterId: bigint; batchSize: number };
      filter: RepublishFilter;
      dryRun: boolean;
    };

function parseCommand(argv: string[]): Command {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: "boolean", short: "h" },
      limit: { type: "string" },
      package: { type: "string" },
      all: { type: "boolean" },
      since: { type: "string" },
      "after-id": { type: "string" },
      "batch-size": { type: "string" },
      "dry-run": { type: "boolean" },
    },
  });
  if (values.help) return { name: "help" };
  const [command, ...rest] = positionals;
  if (command === undefined) throw new UsageError("a command is required");
  const allowed: Record<string, string[]> = {
    "dead-letters": ["limit"],
    requeue: [],
    discard: [],
    republish: ["package", "all", "since", "after-id", "batch-size", "dry-run"],
  };
  const options = allowed[command];
  if (options === undefined) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  for (const key of Object.keys(values)) {
    if (!options.includes(key)) throw new UsageError(`${command} takes no --${key}`);
  }
  const maxPositionals = command === "republish" ? 0 : 1;
  if (rest.length > maxPositionals)
    throw new UsageError(`${command}: unexpected argument ${JSON.stringify(rest[maxPositionals])}`);

  switch (command) {
    case "dead-letters": {
      if (rest[0] !== undefined && values.limit !== undefined)
        throw new UsageError("dead-letters: give LIMIT or --limit, not both");
      return { name: "dead-letters", limit: boundedInt("LIMIT", values.limit ?? rest[0], 100, 10_000) };
    }
    case "requeue":
    case "discard":
      return { name: command, id: positiveId("ID", rest[0]) };
    default: {
      if ((values.package === undefined) === (values.all !== true)) {
        throw new UsageError("republish needs exactly one of --package ID and --all");
      }
      const filter: RepublishFilter = values.since === undefined ? {} : { since: timestamp(values.since) };
      const dryRun = values["dry-run"] === true;
      if (values.package !== undefined) {
        if (values["after-id"] !== undefined || values["batch-size"] !== undefined) {
          throw new UsageError("--after-id and --batch-size go with --all");
        }
        return { name: "republish", target: { package: positiveId("--package", values.package) }, filter, dryRun };
      }
      const afterId = values["after-id"] === undefined ? 0n : positiveId("--after-id", values["after-id"]);
      const batchSize = boundedInt("--batch-size", values["batch-size"], 1000, 10_000);
      return { name: "republish", target: { all: true, afterId, batchSize }, filter, dryRun };
    }
  }
}

let command: Command;
try {
  command = parseCommand(process.argv.slice(2));
} catch (err) {
  // parseArgs throws TypeErrors with codes ERR_PARSE_ARGS_* for unknown options and missing values.
  const code = (err as { code?: unknown }).code;
  if (!(err instanceof UsageError) && !(typeof code === "string" && code.startsWith("ERR_PARSE_ARGS"))) throw err;
  console.error(`admin: ${(err as Error).message}\nRun \`npm run admin -- --help\` for usage.`);
  process.exit(2);
}
if (command.name === "help") {
  console.log(usage);
  process.exit(0);
}

const config = loadConfig();
const db = openDatabase(config, "admin", { maxConnections: 1 });

/**
 * republish --all: batch after batch until none is left or `signal` fires
 * (checked between batches, so a batch is never cut short: each is one
 * transaction). Progress goes to stderr, one line per batch (rewritten in
 * place on a terminal). Returns whether it was interrupted.
 */
async function republishAll(
  database: Database,
  target: { afterId: bigint; batchSize: number },
  filter: RepublishFilter,
  signal: AbortSignal,
): Promise<boolean> {
  const total = await countRepublishable(database, target.afterId, filter);
  const tty = process.stderr.isTTY === true;
  let cursor = target.afterId;
  let written = 0;
  let scanned = 0;
  const progress = () => {
    const percent = total === 0 ? 100 : Math.min(100, Math.floor((scanned / total) * 100));
    const width = 30;
    const filled = Math.round((percent / 100) * width);
    const bar = `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
    process.stderr.write(
      `${tty ? "\r" : ""}republish: ${bar} ${percent}% ${scanned}/${total} packages, ${written} events, last id ${cursor}${tty ? "" : "\n"}`,
    );
  };
  while (!signal.aborted) {
    const batch = await republishBatch(database, cursor, target.batchSize, filter);
    if (batch.lastId === null) break;
    cursor = batch.lastId;
    written += batch.written;
    scanned += batch.scanned;
    progress();
  }
  if (tty) process.stderr.write("\n");
  if (signal.aborted) {
    console.error(`republish: interrupted after package id ${cursor}; resume with --after-id ${cursor}`);
  }
  console.log(
    `republished ${written} packages${signal.aborted ? ` (interrupted; resume with --after-id ${cursor})` : ""}`,
  );
  return signal.aborted;
}

try {
  switch (command.name) {
    case "dead-letters": {
      const rows = await listDeadLetters(db, command.limit);
      for (const row of rows) {
        console.log(
          JSON.stringify({
            id: row.id.toString(),
            packageId: row.packageId.toString(),
            type: row.type,
            attempts: row.attempts,
            parkedBehind: row.parked,
            failedAt: row.failedAt.toISOString(),
            lastError: row.lastError,
          }),
        );
      }
      if (rows.length === 0) console.error("no dead letters");
      break;
    }
    case "requeue":
      await requeueDeadLetter(db, command.id);
      console.log(`requeued event ${command.id}`);
      break;
    case "discard":
      await discardDeadLetter(db, command.id);
      console.log(`discarded event ${command.id}`);
      break;
    case "republish": {
      const { target, filter, dryRun } = command;
      if (dryRun) {
        const n =
          "package" in target
            ? await countRepublishable(db, 0n, filter, target.package)
            : await countRepublishable(db, target.afterId, filter);
        console.log(`dry run: would republish ${n} packages`);
      } else if ("package" in target) {
        const eventId = await republishPackage(db, target.package, filter);
        console.log(`republished package ${target.package} as event ${eventId}`);
      } else {
        // SIGINT/SIGTERM end the run after the batch in flight; a second one is the default (exit at once:
        // the batch's transaction rolls back, and --after-id from the last progress line resumes).
        const stop = new AbortController();
        const onSignal = () => {
          process.removeListener("SIGINT", onSignal);
          process.removeListener("SIGTERM", onSignal);
          console.error("republish: stopping after the current batch (again to stop at once)");
          stop.abort();
        };
        process.on("SIGINT", onSignal);
        process.on("SIGTERM", onSignal);
        const interrupted = await republishAll(db, target, filter, stop.signal);
        process.removeListener("SIGINT", onSignal);
        process.removeListener("SIGTERM", onSignal);
        if (interrupted) process.exitCode = 130;
      }
      break;
    }
  }
} catch (err) {
  if (err instanceof NotFoundError) {
    const what = command.name === "republish" && "package" in command.target ? `package ${command.target.package}` : "";
    console.error(what === "" ? err.message : `${what}: ${err.message} (or removed, or outside --since)`);
    process.exitCode = 1;
  } else throw err;
} finally {
  await db.destroy();
}
