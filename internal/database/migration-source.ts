import { readdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { Knex } from "knex";

/** One migration of a directory: its base name and the file that holds it here. */
export interface MigrationFile {
  /** The file name without its extension, e.g. 20261122000001_packages_and_events. */
  base: string;
  /** The file to load: the compiled .js in dist/, the .ts source in a checkout. */
  path: string;
}

/**
 * The name under which knex records a migration in its bookkeeping table.
 * The migrations ran from their TypeScript sources first, so knex_migrations
 * (and facade_knex_migrations) hold `<base>.ts`; the compiled build must
 * keep that name, or knex would see every applied migration as missing (it
 * refuses to run with a "corrupt" directory) and every compiled one as new.
 */
export const recordedName = (base: string) => `${base}.ts`;

const migrationFile = /^(.+)\.(ts|js|mjs)$/;

/**
 * A knex migration source that lists a directory's migrations by base name,
 * whichever form they are in (.ts in a checkout run through tsx, .js in the
 * compiled dist/), names each `<base>.ts` as it has always been recorded, and
 * loads the file present. Declarations and source maps are not migrations.
 * When both forms exist for one base (a source tree compiled in place), the
 * JavaScript one is loaded: plain node cannot import TypeScript.
 */
export class RecordedNameMigrationSource implements Knex.MigrationSource<MigrationFile> {
  constructor(private readonly directory: string) {}

  async getMigrations(): Promise<MigrationFile[]> {
    const byBase = new Map<string, MigrationFile>();
    for (const name of readdirSync(this.directory).sort()) {
      if (name.endsWith(".d.ts")) continue;
      const m = migrationFile.exec(name);
      if (m === null) continue;
      const base = m[1]!;
      const current = byBase.get(base);
      if (current === undefined || m[2] !== "ts") byBase.set(base, { base, path: join(this.directory, name) });
    }
    // knex applies in the order given: the timestamp prefix, as its own directory source sorts.
    return [...byBase.values()].sort((a, b) => (a.base < b.base ? -1 : a.base > b.base ? 1 : 0));
  }

  getMigrationName(migration: MigrationFile): string {
    return recordedName(migration.base);
  }

  async getMigration(migration: MigrationFile): Promise<Knex.Migration> {
    return (await import(pathToFileURL(migration.path).href)) as Knex.Migration;
  }
}
