import type { Database } from "../../database/database.js";
import { execute, rowsJson } from "../../database/query.js";
import type { PackageState } from "../decode.js";

export interface PackageVersion {
  eventId: bigint;
  state: PackageState;
}

/**
 * Stores package states, one statement for the set (at most one version per
 * package: ON CONFLICT cannot touch a row twice). A row changes only when the
 * version's event is newer than the one it holds, so an older event never
 * overwrites a newer state, whoever wrote it. Returns how many rows changed.
 */
export async function upsertPackages(db: Database, versions: readonly PackageVersion[]): Promise<number> {
  if (versions.length === 0) return 0;
  return execute(
    db,
    `INSERT INTO facade_package AS p
       (id, title, material, maximum_volume, reusable, created, updated, removed, last_event_id)
     SELECT id, title, material, maximum_volume, reusable, created, updated, removed, last_event_id
     FROM jsonb_to_recordset(?::jsonb) AS v(
       id bigint, title text, material text, maximum_volume real, reusable boolean,
       created timestamptz, updated timestamptz, removed boolean, last_event_id bigint)
     ON CONFLICT (id) DO UPDATE SET
       title = EXCLUDED.title,
       material = EXCLUDED.material,
       maximum_volume = EXCLUDED.maximum_volume,
       reusable = EXCLUDED.reusable,
       created = EXCLUDED.created,
       updated = EXCLUDED.updated,
       removed = EXCLUDED.removed,
       last_event_id = EXCLUDED.last_event_id
     WHERE p.last_event_id < EXCLUDED.last_event_id`,
    [
      rowsJson(
        versions.map(({ eventId, state }) => ({
          id: state.id,
          title: state.title,
          material: state.material,
          maximum_volume: state.maximumVolume,
          reusable: state.reusable,
          created: state.created,
          updated: state.updated,
          removed: state.removed,
          last_event_id: eventId,
        })),
      ),
    ],
  );
}
