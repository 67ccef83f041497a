import { loadConfig } from "../../internal/config/config.js";
import { createDatabase, migrateLatest } from "../../internal/database/database.js";

// `npm run migrate`: applies pending migrations to database.url and exits.
const config = loadConfig();
const db = createDatabase({
  url: config.database.url,
  maxConnections: 1,
  statementTimeoutMs: 0,
  acquireTimeoutMs: config.database.acquireTimeoutMs,
  applicationName: "logistic-package-api/migrate",
});
try {
  const applied = await migrateLatest(db);
  console.log(applied.length > 0 ? `applied: ${applied.join(", ")}` : "already up to date");
} finally {
  await db.destroy();
}
