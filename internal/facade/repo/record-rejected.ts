import type { Database } from "../../database/database.js";
import { query, rowsJson } from "../../database/query.js";

export interface Rejection {
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  error: string;
}

/**
 * Records unusable messages with their bytes, one statement for the set.
 * Keyed by (topic, partition, offset): a redelivered copy is recorded once.
 * Returns the offsets recorded now.
 */
export async function recordRejected(db: Database, rejections: readonly Rejection[]): Promise<Set<string>> {
  if (rejections.length === 0) return new Set();
  const rows = await query<{ partition: number; offset: bigint }>(
    db,
    `INSERT INTO facade_rejected (topic, partition, "offset", key, raw, error)
     SELECT topic, partition, "offset", decode(key, 'base64'), decode(raw, 'base64'), error
     FROM jsonb_to_recordset(?::jsonb) AS r(topic text, partition integer, "offset" bigint, key text, raw text, error text)
     ON CONFLICT (topic, partition, "offset") DO NOTHING
     RETURNING topic, partition, "offset"`,
    [
      rowsJson(
        rejections.map((r) => ({
          topic: storable(r.topic),
          partition: r.partition,
          offset: r.offset,
          key: r.key?.toString("base64") ?? null,
          raw: r.value?.toString("base64") ?? null,
          error: storable(r.error).slice(0, 4000),
        })),
      ),
    ],
  );
  return new Set(rows.map((r) => `${r.partition}:${r.offset}`));
}

// Error texts may quote the bad input (JSON.parse does): Postgres text takes
// neither NUL nor unpaired surrogates, and this insert must not fail.
function storable(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is exactly what Postgres text cannot store.
  return text.replace(/\u0000|\p{Cs}/gu, "\uFFFD");
}
