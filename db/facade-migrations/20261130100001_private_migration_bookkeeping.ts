import type { Knex } from "knex";
import { revokeBookkeepingGrants } from "../../internal/database/migration-bookkeeping.js";

// The bookkeeping tables are the migrating role's alone: migration-bookkeeping.ts says why.
export async function up(knex: Knex): Promise<void> {
  await revokeBookkeepingGrants(knex);
}

// Nothing to restore: the grants were never the app's to have.
export async function down(): Promise<void> {}
