// knex expands JS arrays in raw bindings into lists, so a set of rows travels
// as one JSON document and is unpacked with jsonb_to_recordset: one statement
// per set, whatever its size. bigints go as strings (JSON has no int64).
export const rowsJson = (rows: readonly Record<string, unknown>[]): string =>
  JSON.stringify(rows, (_key, value: unknown) => (typeof value === "bigint" ? value.toString() : value));

export const idArray = (ids: readonly bigint[]): string => `{${ids.join(",")}}`;
