// Operator commands for the outbox's dead letters:
//   npm run admin -- dead-letters [LIMIT]   list dead letters (oldest first) with their last error
//   npm run admin -- requeue ID             put a dead letter back: it is published next, then its package's parked events
//   npm run admin -- discard ID             drop it for good: its package's parked events flow again
import { loadConfig } from "../../internal/config/config.js";
import { createDatabase } from "../../internal/database/database.js";
import { NotFoundError } from "../../internal/domain/errors.js";
import { discardDeadLetter, listDeadLetters, requeueDeadLetter } from "../../internal/repo/outbox/dead-letters.js";

const usage = "usage: npm run admin -- dead-letters [LIMIT] | requeue ID | discard ID";
const [command, arg] = process.argv.slice(2);
const config = loadConfig();
const db = createDatabase({
  url: config.database.url,
  maxConnections: 1,
  statementTimeoutMs: config.database.statementTimeoutMs,
  acquireTimeoutMs: config.database.acquireTimeoutMs,
  applicationName: "logistic-package-api/admin",
});

function parseId(value: string | undefined): bigint {
  if (value === undefined || !/^[1-9][0-9]{0,18}$/.test(value)) {
    console.error(`${usage}\nID must be a positive event id`);
    process.exit(2);
  }
  return BigInt(value);
}

try {
  switch (command) {
    case "dead-letters": {
      const limit = arg === undefined ? 100 : Number(arg);
      const rows = await listDeadLetters(db, Number.isInteger(limit) && limit > 0 ? limit : 100);
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
    case "requeue": {
      const id = parseId(arg);
      await requeueDeadLetter(db, id);
      console.log(`requeued event ${id}`);
      break;
    }
    case "discard": {
      const id = parseId(arg);
      await discardDeadLetter(db, id);
      console.log(`discarded event ${id}`);
      break;
    }
    default:
      console.error(usage);
      process.exitCode = 2;
  }
} catch (err) {
  if (err instanceof NotFoundError) {
    console.error(err.message);
    process.exitCode = 1;
  } else throw err;
} finally {
  await db.destroy();
}
