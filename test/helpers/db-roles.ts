import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createDatabase, type Database } from "../../internal/database/database.js";
import { asAdmin, createEmptyDatabase, databaseUrl } from "./database.js";

const rolesSql = fileURLToPath(new URL("../../db/roles.sql", import.meta.url));

export interface RoleDatabase {
  name: string;
  owner: { role: string; password: string; url: string };
  app: { role: string; password: string; url: string };
  /** The same database as the superuser, for assertions. */
  db: Database;
  /** Drops the database and both roles. */
  drop(): Promise<void>;
}

function roleUrl(name: string, role: string, password: string): string {
  const url = new URL(databaseUrl(name));
  url.username = role;
  url.password = password;
  return url.toString();
}

/**
 * A fresh, empty database (not the migrated template) with the owner and app
 * roles of db/roles.sql, set up by running that file with psql exactly as the
 * README says. Role names are unique per call; `drop()` removes everything.
 */
export async function createRoleDatabase(): Promise<RoleDatabase> {
  const suffix = randomBytes(4).toString("hex");
  const owner = { role: `lpa_owner_${suffix}`, password: randomBytes(12).toString("hex") };
  const app = { role: `lpa_app_${suffix}`, password: randomBytes(12).toString("hex") };
  const database = await createEmptyDatabase(`roles_${suffix}`);
  const name = database.name;
  const drop = async () => {
    await database.drop();
    await asAdmin((c) => c.query(`DROP ROLE IF EXISTS ${app.role}`));
    await asAdmin((c) => c.query(`DROP ROLE IF EXISTS ${owner.role}`));
  };
  try {
    await promisify(execFile)("psql", [
      databaseUrl(name),
      "-q",
      "-v",
      "ON_ERROR_STOP=1",
      "-v",
      `owner=${owner.role}`,
      "-v",
      `owner_password=${owner.password}`,
      "-v",
      `app=${app.role}`,
      "-v",
      `app_password=${app.password}`,
      "-f",
      rolesSql,
    ]);
  } catch (err) {
    await drop();
    throw err;
  }
  const db = createDatabase({
    url: databaseUrl(name),
    maxConnections: 2,
    statementTimeoutMs: 30_000,
    acquireTimeoutMs: 10_000,
    applicationName: "lpa-test-roles",
  });
  return {
    name,
    owner: { ...owner, url: roleUrl(name, owner.role, owner.password) },
    app: { ...app, url: roleUrl(name, app.role, app.password) },
    db,
    async drop() {
      await db.destroy();
      await drop();
    },
  };
}
