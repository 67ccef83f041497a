import { applyMigrations } from "../../internal/app/scaffold.js";
import { loadConfig } from "../../internal/config/config.js";
import { apiMigrations, MigrationPermissionError } from "../../internal/database/migrate.js";

// `npm run migrate`: applies pending migrations to the database of database.url,
// connecting with database.migrationUrl (DATABASE_MIGRATION_URL) when it is set, and exits.
const config = loadConfig();
try {
  const applied = await applyMigrations(config, "migrate", apiMigrations(config));
  console.log(applied.length > 0 ? `applied: ${applied.join(", ")}` : "already up to date");
} catch (err) {
  // The role mistake is the operator's to fix: its message says how; no stack needed.
  if (!(err instanceof MigrationPermissionError)) throw err;
  console.error(`migrate: ${err.message}`);
  process.exitCode = 1;
}
