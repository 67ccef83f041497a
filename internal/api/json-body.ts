import { type DescMessage, type DescService, type JsonValue, ScalarType } from "@bufbuild/protobuf";
import { isWrapperDesc } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter, type MethodImpl, type ServiceImpl } from "@connectrpc/connect";

/**
 * Strict reading of JSON request bodies (REST and every JSON flavour of
 * gRPC/Connect). JSON.parse alone accepts what protobuf JSON must not:
 * - a uint64 written as a JSON number above 2^53 (`{"PackageID":
 *   9007199254740993}`) becomes the nearest double, i.e. another id. Such
 *   numbers are kept exact, from their source text, where the field is a 64-bit
 *   integer (as Go's protojson, which the original service used, does);
 * - invalid UTF-8 silently becomes U+FFFD, so a client's bytes are stored
 *   other than sent: rejected;
 * - duplicate keys silently keep the last one: rejected;
 * - nesting has no bound: capped (this API's messages are three levels deep).
 * Every problem is InvalidArgument with a message naming it.
 */

export const maxJsonDepth = 32;

// A leading byte order mark is dropped (RFC 8259 lets parsers ignore it), as
// connect's own decoder does.
const utf8 = new TextDecoder("utf-8", { fatal: true });

const int64Scalars: ReadonlySet<ScalarType> = new Set([
  ScalarType.INT64,
  ScalarType.UINT64,
  ScalarType.SINT64,
  ScalarType.FIXED64,
  ScalarType.SFIXED64,
]);

function invalid(problem: string): ConnectError {
  return new ConnectError(`invalid JSON body: ${problem}`, Code.InvalidArgument);
}

/** Bytes → JSON text, refusing invalid UTF-8. */
export function decodeUtf8(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw invalid("not valid UTF-8");
  }
}

/**
 * Parses `text` as the JSON of a `desc` message (or any JSON value; the caller
 * checks the shape). Returns the value and whether any number was rewritten.
 */
export function parseJsonFor(desc: DescMessage, text: string): { value: JsonValue; rewritten: boolean } {
  let value: JsonValue;
  try {
    value = JSON.parse(text) as JsonValue;
  } catch (err) {
    throw invalid((err as Error).message);
  }
  let rewritten = false;
  // JSON.parse accepted the text, so the scan below may assume it well formed.
  for (const { path, literal } of scan(text)) {
    if (!isInt64At(desc, path)) continue; // a float, or a field that will reject a number anyway
    setAt(value, path, exactInteger(literal) ?? literal);
    rewritten = true;
  }
  return { value, rewritten };
}

/**
 * A connect `jsonOptions.textDecoder` for the request messages of one method:
 * connect-es decodes the body with it and then parses the text it returns, so
 * every JSON protocol (Connect, gRPC-Web and gRPC with +json) gets the strict
 * reading above; the body was already bounded by readMaxBytes.
 */
export function strictJsonDecoder(desc: DescMessage): { decode(input?: Uint8Array): string } {
  return {
    decode(input?: Uint8Array): string {
      const text = decodeUtf8(input ?? new Uint8Array());
      const { value, rewritten } = parseJsonFor(desc, text);
      return rewritten ? JSON.stringify(value) : text;
    },
  };
}

/**
 * router.service() with the strict JSON reading for each method's requests.
 * connect-es takes a textDecoder in jsonOptions at run time (its type leaves
 * it out); the Connect JSON tests of exact uint64s fail if that ever stops.
 */
export function serviceWithStrictJson<T extends DescService>(
  router: ConnectRouter,
  service: T,
  impl: ServiceImpl<T>,
): void {
  for (const method of service.methods) {
    const fn = (impl as Record<string, (...args: never[]) => unknown>)[method.localName]!;
    // ignoreUnknownFields: connect's own default, kept (newer clients may send newer fields).
    const jsonOptions = { ignoreUnknownFields: true, textDecoder: strictJsonDecoder(method.input) };
    router.rpc(method, fn.bind(impl) as MethodImpl<typeof method>, { jsonOptions });
  }
}

type PathSegment = string | number;

interface Frame {
  /** Keys seen so far; null in arrays. */
  seen: Set<string> | null;
  key: string;
  index: number;
}

const numberChars = /[-+.eE0-9]/;

/**
 * One pass over well-formed JSON: rejects duplicate keys and deep nesting, and
 * returns the numbers that JSON.parse cannot represent exactly, with their path.
 */
function scan(text: string): { path: PathSegment[]; literal: string }[] {
  const found: { path: PathSegment[]; literal: string }[] = [];
  const stack: Frame[] = [];
  let expectKey = false;
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    switch (c) {
      case "{":
      case "[":
        if (stack.length >= maxJsonDepth) throw invalid(`nested deeper than ${maxJsonDepth} levels`);
        stack.push({ seen: c === "{" ? new Set() : null, key: "", index: 0 });
        expectKey = c === "{";
        i++;
        break;
      case "}":
      case "]":
        stack.pop();
        expectKey = false;
        i++;
        break;
      case ",": {
        const top = stack[stack.length - 1]!;
        if (top.seen === null) top.index++;
        expectKey = top.seen !== null;
        i++;
        break;
      }
      case ":":
        expectKey = false;
        i++;
        break;
      case '"': {
        const open = i++;
        let escaped = false;
        while (i < text.length && text[i] !== '"') {
          if (text[i] === "\\") {
            escaped = true;
            i++;
          }
          i++;
        }
        const close = i++;
        const top = stack[stack.length - 1];
        if (expectKey && top?.seen) {
          // A key written with escapes ("\u0054itle") is the same key.
          const key = escaped ? (JSON.parse(text.slice(open, close + 1)) as string) : text.slice(open + 1, close);
          if (top.seen.has(key)) {
            // Quoted with escapes, and cut: the message must stay one short line.
            const shown = key.length > 64 ? `${key.slice(0, 64)}…` : key;
            throw invalid(`duplicate key ${JSON.stringify(shown)}`);
          }
          top.seen.add(key);
          top.key = key;
        }
        expectKey = false;
        break;
      }
      default:
        if (c === "-" || (c >= "0" && c <= "9")) {
          const start = i;
          while (i < text.length && numberChars.test(text[i]!)) i++;
          const literal = text.slice(start, i);
          if (!isExactSafeInteger(literal)) {
            found.push({ path: stack.map((f) => (f.seen === null ? f.index : f.key)), literal });
          }
        } else {
          i++; // whitespace, true, false, null
        }
    }
  }
  return found;
}

const plainInteger = /^-?(0|[1-9][0-9]*)$/;

/** Whether JSON.parse gives exactly this integer; non-integers are fine as doubles. */
function isExactSafeInteger(literal: string): boolean {
  if (plainInteger.test(literal)) return literal.length <= 15 || Number.isSafeInteger(Number(literal));
  // 1.5 or 2e3: only a problem where a 64-bit field is meant and the double is
  // not the literal's exact integer (9007199254740993.0, 1.5, 1e400).
  const n = Number(literal);
  return !Number.isInteger(n) ? true : Number.isSafeInteger(n) && exactInteger(literal) === String(n);
}

/**
 * The exact integer a number literal denotes, as a decimal string, or undefined
 * when it is not an integer or has more digits than any 64-bit value (so that
 * 1e999999 cannot make a huge bigint).
 */
function exactInteger(literal: string): string | undefined {
  const m = /^(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([-+]?[0-9]+))?$/.exec(literal);
  if (!m) return undefined;
  const [, sign, whole, fraction = "", exponentText = "0"] = m;
  let digits = (whole! + fraction).replace(/^0+/, "");
  if (digits === "") return "0";
  let exponent = Number(exponentText) - fraction.length;
  // Trailing zeros move into the exponent, so 1.50e1 is 15.
  const trimmed = digits.replace(/0+$/, "");
  exponent += digits.length - trimmed.length;
  digits = trimmed;
  if (exponent < 0) return undefined; // a fraction remains
  if (digits.length + exponent > 20) return undefined; // beyond 2^64: the field rejects it
  return `${sign}${digits}${"0".repeat(exponent)}`;
}

/** Whether `path` in a `desc` message is (an element of) a 64-bit integer field. */
function isInt64At(desc: DescMessage, path: readonly PathSegment[]): boolean {
  let message: DescMessage = desc;
  let i = 0;
  for (;;) {
    if (isWrapperDesc(message)) {
      const inner = message.fields[0]!;
      return i === path.length && inner.fieldKind === "scalar" && int64Scalars.has(inner.scalar);
    }
    const key = path[i++];
    if (typeof key !== "string") return false;
    const field = message.fields.find((f) => f.jsonName === key || f.name === key);
    if (field === undefined) return false;
    let scalar: ScalarType | undefined;
    let next: DescMessage | undefined;
    switch (field.fieldKind) {
      case "scalar":
        scalar = field.scalar;
        break;
      case "message":
        next = field.message;
        break;
      case "list":
        if (typeof path[i++] !== "number") return false;
        if (field.listKind === "scalar") scalar = field.scalar;
        else if (field.listKind === "message") next = field.message;
        break;
      case "map":
        if (typeof path[i++] !== "string") return false;
        if (field.mapKind === "scalar") scalar = field.scalar;
        else if (field.mapKind === "message") next = field.message;
        break;
      default:
        return false;
    }
    if (scalar !== undefined) return i === path.length && int64Scalars.has(scalar);
    if (next === undefined) return false;
    message = next;
  }
}

function setAt(root: JsonValue, path: readonly PathSegment[], value: string): void {
  let node = root as Record<string | number, JsonValue>;
  for (const segment of path.slice(0, -1)) node = node[segment] as Record<string | number, JsonValue>;
  node[path[path.length - 1]!] = value;
}
