// Parsing of command arguments. Everything here is syntax only (IDs, numbers,
// yes/no, field names, quoting): the rules on values (text length, …) belong to
// the API, whose InvalidArgument messages the bot shows as they are.

/**
 * A failure the user can fix (bad input, unknown package): its message is the
 * reply, as plain text (escaped before it is sent as HTML).
 */
export class UserError extends Error {
  override name = "UserError";
}

export interface NewPackageInput {
  title: string;
  material: string;
  maximumVolume: number;
  reusable: boolean;
}

export interface PackageChangesInput {
  title?: string;
  material?: string;
  maximumVolume?: number;
  reusable?: boolean;
}

export const usage = {
  get: "/get ID, e.g. /get 42",
  delete: "/delete ID, e.g. /delete 42",
  new: "/new title | material | volume | reusable, e.g. /new Big box | cardboard | 1200 | yes",
  edit: '/edit ID field=value …, e.g. /edit 42 title="Big box" volume=2.5 reusable=no',
} as const;

// Package IDs are Postgres bigint: a larger number names no package.
const maxId = 2n ** 63n - 1n;

export function parsePackageId(text: string, usageLine: string): bigint {
  const s = text.trim();
  if (s === "") throw new UserError(`Which package? Usage: ${usageLine}`);
  if (!/^\d+$/.test(s))
    throw new UserError(`"${s}" is not a package ID: an ID is a whole number from 1. Usage: ${usageLine}`);
  const id = BigInt(s);
  if (id < 1n || id > maxId) throw new UserError(`"${s}" is not a package ID: IDs are between 1 and ${maxId}.`);
  return id;
}

/** `/list` paging offsets (callback data); the same range as IDs. */
export function parseOffset(text: string): bigint | undefined {
  if (!/^\d{1,19}$/.test(text)) return undefined;
  const offset = BigInt(text);
  return offset <= maxId ? offset : undefined;
}

/** `title | material | volume | reusable`; reusable may be left out (= no). */
export function parseNew(text: string): NewPackageInput {
  const parts = text.split("|").map((p) => p.trim());
  if (text.trim() === "" || parts.length < 3 || parts.length > 4) {
    throw new UserError(`Expected 3 or 4 parts separated by "|". Usage: ${usage.new}`);
  }
  const [title, material, volume, reusable] = parts as [string, string, string, string | undefined];
  return {
    title,
    material,
    maximumVolume: parseVolume(volume),
    reusable: reusable === undefined || reusable === "" ? false : parseYesNo("reusable", reusable),
  };
}

const editableFields = ["title", "material", "volume", "reusable"] as const;
type EditableField = (typeof editableFields)[number];

/** `ID field=value …`; a value with spaces is quoted: title="Big box". */
export function parseEdit(text: string): { id: bigint; changes: PackageChangesInput } {
  const trimmed = text.trim();
  const idEnd = trimmed.search(/\s/);
  const idText = idEnd === -1 ? trimmed : trimmed.slice(0, idEnd);
  const id = parsePackageId(idText, usage.edit);
  const pairs = splitPairs(idEnd === -1 ? "" : trimmed.slice(idEnd));
  if (pairs.length === 0) {
    throw new UserError(`Nothing to change: give at least one of ${editableFields.join(", ")}. Usage: ${usage.edit}`);
  }
  const changes: PackageChangesInput = {};
  const seen = new Set<EditableField>();
  for (const { key, value } of pairs) {
    const field = key.toLowerCase() as EditableField;
    if (!editableFields.includes(field)) {
      throw new UserError(`Unknown field "${key}": the fields are ${editableFields.join(", ")}.`);
    }
    if (seen.has(field)) throw new UserError(`Field ${field} is given twice.`);
    seen.add(field);
    // The API reads "" and 0 as "unchanged", so they cannot mean a value here.
    if (value === "") throw new UserError(`Field ${field} needs a value, e.g. ${field}=${example[field]}.`);
    switch (field) {
      case "title":
        changes.title = value;
        break;
      case "material":
        changes.material = value;
        break;
      case "volume":
        changes.maximumVolume = parseVolume(value);
        break;
      case "reusable":
        changes.reusable = parseYesNo("reusable", value);
        break;
    }
  }
  return { id, changes };
}

const example: Record<EditableField, string> = {
  title: '"Big box"',
  material: "cardboard",
  volume: "2.5",
  reusable: "yes",
};

/** Volume in cm³: a plain decimal number above 0 ("2.5" or "2,5"). */
export function parseVolume(text: string): number {
  const s = text.trim();
  if (!/^(\d+([.,]\d*)?|[.,]\d+)$/.test(s)) {
    throw new UserError(`"${s}" is not a number: volume is a number of cm³ such as 1200 or 2.5.`);
  }
  const value = Number(s.replace(",", "."));
  if (!Number.isFinite(value) || value <= 0) throw new UserError(`Volume must be greater than 0 (got "${s}").`);
  return value;
}

const yes = new Set(["yes", "y", "true", "1", "on"]);
const no = new Set(["no", "n", "false", "0", "off"]);

export function parseYesNo(field: string, text: string): boolean {
  const s = text.trim().toLowerCase();
  if (yes.has(s)) return true;
  if (no.has(s)) return false;
  throw new UserError(`"${text.trim()}" is not yes or no (field ${field}).`);
}

// Phones turn " into “ ” or « » as you type, so those quote a value as well.
const closingQuote: Record<string, string> = { '"': '"', "“": "”", "”": "”", "„": "“", "«": "»", "'": "'" };

/** Splits `a=1 b="x y"` into pairs. A backslash escapes the next character inside quotes. */
export function splitPairs(text: string): { key: string; value: string }[] {
  const pairs: { key: string; value: string }[] = [];
  let i = 0;
  const n = text.length;
  while (i < n) {
    while (i < n && /\s/.test(text[i]!)) i++;
    if (i >= n) break;
    const start = i;
    while (i < n && text[i] !== "=" && !/\s/.test(text[i]!)) i++;
    const key = text.slice(start, i);
    if (text[i] !== "=" || key === "") {
      const word = text.slice(start).split(/\s/)[0]!;
      throw new UserError(`Expected field=value, got "${word}". Usage: ${usage.edit}`);
    }
    i++; // "="
    let value = "";
    const close = closingQuote[text[i] ?? ""];
    if (close !== undefined) {
      i++;
      let closed = false;
      while (i < n) {
        const c = text[i]!;
        if (c === "\\" && i + 1 < n) {
          value += text[i + 1];
          i += 2;
        } else if (c === close) {
          closed = true;
          i++;
          break;
        } else {
          value += c;
          i++;
        }
      }
      if (!closed) throw new UserError(`The value of ${key} has no closing quote (${close}).`);
      if (i < n && !/\s/.test(text[i]!)) throw new UserError(`Put a space after the closing quote of ${key}.`);
    } else {
      while (i < n && !/\s/.test(text[i]!)) value += text[i++];
    }
    pairs.push({ key, value });
  }
  return pairs;
}
