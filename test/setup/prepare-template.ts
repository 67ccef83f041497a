import pg from "pg";
import { createDatabase, migrateLatest } from "../../internal/database/database.js";
import { adminUrl, databaseUrl, templateName } from "../helpers/database.js";

// Run once per test run (scripts/test.sh): a migrated template that every test
// file clones, so each file gets a fresh database in milliseconds and the
// migrations themselves are exercised on every run.
const admin = new pg.Client({ connectionString: adminUrl });
await admin.connect();
try {
  await admin.query(`DROP DATABASE IF EXISTS ${templateName} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${templateName}`);
  // Leftovers of interrupted runs: names carry the creating process id, so
  // only databases whose process is gone are dropped, never those of a run
  // still going on beside this one.
  const leftovers = await admin.query<{ datname: string }>(
    `SELECT datname FROM pg_database WHERE datname ~ '^lpa_(test|tpl)_[0-9]+(_|$)' AND datname <> $1`,
    [templateName],
  );
  for (const { datname } of leftovers.rows) {
    const pid = Number(/^lpa_(?:test|tpl)_([0-9]+)/.exec(datname)![1]);
    if (!isAlive(pid)) await admin.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`);
  }
} finally {
  await admin.end();
}
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

const db = createDatabase({
  url: databaseUrl(templateName),
  maxConnections: 1,
  statementTimeoutMs: 0,
  acquireTimeoutMs: 10_000,
  applicationName: "lpa-test-setup",
});
try {
  const applied = await migrateLatest(db);
  console.log(`test template ${templateName}: ${applied.length} migrations applied`);
} finally {
  await db.destroy();
}
