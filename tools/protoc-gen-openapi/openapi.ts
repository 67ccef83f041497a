import {
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescService,
  getOption,
  hasOption,
  ScalarType,
} from "@bufbuild/protobuf";
import { FeatureSet_FieldPresence } from "@bufbuild/protobuf/wkt";
import { getComments } from "@bufbuild/protoplugin";
import { Code } from "@connectrpc/connect";
import { httpStatus } from "../../internal/api/gateway.js";
import { accessPolicy } from "../../internal/app/api-security.js";
import { http as httpRule } from "../../pkg/google/api/annotations_pb.js";

/**
 * Builds the OpenAPI 3.1 document of the REST gateway (internal/api/gateway.ts)
 * from the services' `google.api.http` annotations. It describes what that
 * gateway does, not grpc-gateway in general: the same routes, the path
 * parameters it binds, query parameters on every route without `body: "*"`,
 * protobuf JSON (the fields' JSON names, 64-bit integers as strings), its
 * error body and HTTP statuses (the gateway's own table), and the roles of
 * api-security.ts when the server runs with AUTH_TOKENS_FILE.
 */

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Obj = { [key: string]: Json };
/** Requests accept more than responses emit (64-bit integers as numbers too), so schemas differ by direction. */
type Direction = "input" | "output";

export const openApiFileName = "openapi.json";
const bearerScheme = "bearerAuth";

export function buildOpenApi(services: readonly DescService[]): Obj {
  const schemas = new SchemaSet();
  const paths: Record<string, Obj> = {};
  const tags: Obj[] = [];
  for (const service of services) {
    const methods = service.methods.filter(isRestMethod);
    if (methods.length === 0) continue;
    tags.push({ name: service.name, description: commentOf(service) });
    for (const method of methods) {
      const { template, verb, body } = routeOf(method);
      const path = (paths[template] ??= {});
      path[verb] = operation(service, method, template, body, schemas);
    }
  }
  if (Object.keys(paths).length === 0) throw new Error("no method has a google.api.http annotation");

  return {
    openapi: "3.1.0",
    info: {
      title: "logistic-package-api REST gateway",
      version: "v1",
      description: [
        "The REST routes of the gateway, transcoded from the `google.api.http` annotations of the protos (this document is generated from them).",
        "",
        "- Bodies and responses are protobuf JSON with the protos' field names as they are (PascalCase: `PackageID`, `Title`).",
        "- 64-bit integers (format int64/uint64) are decimal strings in responses, exact beyond 2^53; request bodies may send them as strings or numbers.",
        "- Every field is present in responses (zero values included), except messages that are not set.",
        "- Unknown fields, duplicate keys and invalid UTF-8 are rejected with 400.",
        "- An error is `{code, message, details}`: `code` is the gRPC status code as a number, `message` says what went wrong, `details` is empty. A path with no route answers 404, a known path with another method 405 with an `Allow` header.",
        "- When the server runs with `AUTH_TOKENS_FILE`, every call needs `Authorization: Bearer <token>` (401 without a valid one) of a role that allows the operation (403 otherwise): reader (Describe, List), writer (also Create, Update), admin (also Remove).",
      ].join("\n"),
    },
    // Relative: the gateway serves this document, so its own origin is the server.
    servers: [{ url: "/", description: "the gateway serving this document" }],
    tags,
    paths,
    components: {
      schemas: schemas.toJson(),
      responses: errorResponses(),
      securitySchemes: {
        [bearerScheme]: {
          type: "http",
          scheme: "bearer",
          description: "A token of AUTH_TOKENS_FILE. Not needed when the server runs without AUTH_TOKENS_FILE.",
        },
      },
    },
  };
}

function isRestMethod(method: DescMethod): boolean {
  // As the gateway: unary methods with a verb; `custom` verbs are not served.
  if (method.methodKind !== "unary" || !hasOption(method, httpRule)) return false;
  const verb = getOption(method, httpRule).pattern.case;
  return verb !== undefined && verb !== "custom";
}

function routeOf(method: DescMethod): { template: string; verb: string; body: string } {
  const rule = getOption(method, httpRule);
  return { template: rule.pattern.value as string, verb: rule.pattern.case!, body: rule.body };
}

function operation(service: DescService, method: DescMethod, template: string, body: string, schemas: SchemaSet): Obj {
  const input = method.input;
  const pathParams = [...template.matchAll(/\{([A-Za-z_][A-Za-z0-9_.]*)\}/g)].map((m) => m[1]!);
  const pathFields = pathParams.map((name) => {
    const field = input.fields.find((f) => f.name === name || f.jsonName === name);
    if (field === undefined)
      throw new Error(`${method.name}: path parameter {${name}} is not a field of ${input.typeName}`);
    return field;
  });
  const parameters: Obj[] = pathFields.map((field, i) => ({
    name: pathParams[i]!,
    in: "path",
    required: true,
    description: commentOf(field) || fieldPath(field),
    schema: parameterSchema(field, schemas),
  }));

  const op: Obj = {
    operationId: method.name,
    summary: firstSentence(commentOf(method)) || method.name,
    description: [commentOf(method), roleLine(service, method)].filter((s) => s !== "").join("\n\n"),
    tags: [service.name],
  };
  const rest = input.fields.filter((f) => !pathFields.includes(f));
  if (body === "*") {
    // The gateway reads every field but the path's from the body (the path wins).
    op.requestBody = {
      required: false,
      content: {
        "application/json": {
          schema: pathFields.length === 0 ? schemas.ref(input, "input") : schemas.inline(input, "input", rest),
        },
      },
    };
  } else if (body !== "") {
    throw new Error(`${method.name}: body "${body}" is not supported by the gateway (only "*" or none)`);
  } else {
    // No body: the gateway takes the remaining fields from the query, one value each.
    for (const field of rest) {
      if (field.fieldKind !== "scalar" && field.fieldKind !== "enum") continue;
      parameters.push({
        name: field.jsonName,
        in: "query",
        required: false,
        description: commentOf(field) || fieldPath(field),
        schema: parameterSchema(field, schemas),
      });
    }
  }
  if (parameters.length > 0) op.parameters = parameters;

  const responses: Obj = {
    "200": {
      description: "OK",
      content: { "application/json": { schema: schemas.ref(method.output, "output") } },
    },
  };
  for (const status of errorStatuses())
    responses[String(status)] = { $ref: `#/components/responses/${statusName(status)}` };
  op.responses = responses;
  // Either a bearer token or nothing: which one depends on AUTH_TOKENS_FILE.
  op.security = [{ [bearerScheme]: [] }, {}];
  return op;
}

/** Fallback description of an uncommented parameter. */
function fieldPath(field: DescField): string {
  return `Field \`${field.name}\` of \`${field.parent.name}\`.`;
}

/**
 * A path or query value is text that the gateway hands to protobuf JSON as a
 * string (booleans as true/false): the text forms of the response schemas.
 */
function parameterSchema(field: DescField, schemas: SchemaSet): Obj {
  return fieldSchema(field, "output", schemas, true);
}

function roleLine(service: DescService, method: DescMethod): string {
  if (accessPolicy.openServices.has(service.typeName)) return "Needs no token.";
  const role =
    accessPolicy.roles[`${service.typeName}/${method.name}`] ?? accessPolicy.roles[`${service.typeName}/*`] ?? "admin";
  return `With AUTH_TOKENS_FILE: needs a token of role ${role} or above.`;
}

// --- errors --------------------------------------------------------------------------

function errorStatuses(): number[] {
  return [...new Set(Object.values(httpStatus))].sort((a, b) => a - b);
}

function statusName(status: number): string {
  return `Status${status}`;
}

const codeNames: Record<Code, string> = Object.fromEntries(
  Object.entries(Code)
    .filter(([, v]) => typeof v === "number")
    .map(([k, v]) => [v, k]),
) as Record<Code, string>;

function errorResponses(): Obj {
  const out: Obj = {};
  for (const status of errorStatuses()) {
    const codes = (Object.entries(httpStatus) as [string, number][])
      .filter(([, s]) => s === status)
      .map(([code]) => `${codeNames[Number(code) as Code]} (${code})`);
    let description = `gRPC ${codes.join(", ")}`;
    if (status === 401 || status === 403) description += " — only when the server runs with AUTH_TOKENS_FILE";
    if (status === 404) description += ", or no route for the path";
    out[statusName(status)] = {
      description,
      content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
    };
  }
  return out;
}

const errorSchema: Obj = {
  type: "object",
  description: "The gateway's error body.",
  required: ["code", "message", "details"],
  properties: {
    code: {
      type: "integer",
      description:
        "The gRPC status code: " +
        Object.entries(codeNames)
          .map(([n, name]) => `${n} ${name}`)
          .join(", ") +
        ".",
      minimum: 1,
      maximum: 16,
    },
    message: { type: "string", description: "What went wrong." },
    details: { type: "array", description: "Always empty.", items: {}, maxItems: 0 },
  },
  additionalProperties: false,
};

// --- schemas -------------------------------------------------------------------------

/** Component schemas, named by message; a message used in both directions gets an `Input` twin. */
class SchemaSet {
  private readonly wanted = new Map<string, { message: DescMessage; direction: Direction }>();

  ref(message: DescMessage, direction: Direction): Obj {
    const wkt = wellKnown(message, direction);
    if (wkt !== undefined) return wkt;
    const key = `${direction}:${message.typeName}`;
    if (!this.wanted.has(key)) {
      this.wanted.set(key, { message, direction });
      // Nested messages are reached while building this one.
      this.build(message, direction, message.fields);
    }
    return { $ref: `#/components/schemas/${this.nameOf(message, direction)}` };
  }

  /** A message without some fields (those the path binds), described in place. */
  inline(message: DescMessage, direction: Direction, fields: readonly DescField[]): Obj {
    return this.build(message, direction, fields);
  }

  toJson(): Obj {
    const out: Obj = { Error: errorSchema };
    const entries = [...this.wanted.values()].map(({ message, direction }) => {
      return [this.nameOf(message, direction), this.build(message, direction, message.fields)] as const;
    });
    for (const [name, schema] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) out[name] = schema;
    return out;
  }

  private nameOf(message: DescMessage, direction: Direction): string {
    const both = this.wanted.has(`input:${message.typeName}`) && this.wanted.has(`output:${message.typeName}`);
    const clash = [...this.wanted.values()].some(
      (w) => w.message.name === message.name && w.message.typeName !== message.typeName,
    );
    const base = clash ? message.typeName : message.name;
    return both && direction === "input" ? `${base}Input` : base;
  }

  private build(message: DescMessage, direction: Direction, fields: readonly DescField[]): Obj {
    const properties: Obj = {};
    const required: string[] = [];
    for (const field of fields) {
      properties[field.jsonName] = fieldSchema(field, direction, this, false);
      // toJson with alwaysEmitImplicit: every field without explicit presence is in a response.
      if (direction === "output" && field.presence === FeatureSet_FieldPresence.IMPLICIT && field.oneof === undefined)
        required.push(field.jsonName);
    }
    const schema: Obj = { type: "object" };
    const description = commentOf(message);
    if (description !== "") schema.description = description;
    if (required.length > 0) schema.required = required;
    schema.properties = properties;
    // Unknown fields are rejected in requests (and never sent in responses).
    schema.additionalProperties = false;
    return schema;
  }
}

function fieldSchema(field: DescField, direction: Direction, schemas: SchemaSet, bare: boolean): Obj {
  let schema: Obj;
  switch (field.fieldKind) {
    case "scalar":
      schema = scalarSchema(field.scalar, direction);
      break;
    case "enum":
      schema = enumSchema(
        field.enum.values.map((v) => v.name),
        direction,
      );
      break;
    case "message":
      schema = schemas.ref(field.message, direction);
      break;
    case "list":
      schema = {
        type: "array",
        items:
          field.listKind === "scalar"
            ? scalarSchema(field.scalar, direction)
            : field.listKind === "enum"
              ? enumSchema(
                  field.enum.values.map((v) => v.name),
                  direction,
                )
              : schemas.ref(field.message, direction),
      };
      break;
    case "map":
      schema = {
        type: "object",
        additionalProperties:
          field.mapKind === "scalar"
            ? scalarSchema(field.scalar, direction)
            : field.mapKind === "enum"
              ? enumSchema(
                  field.enum.values.map((v) => v.name),
                  direction,
                )
              : schemas.ref(field.message, direction),
      };
      break;
  }
  const description = commentOf(field);
  if (!bare && description !== "") {
    // A $ref's siblings are allowed in 3.1; keep the reference and add the field's words.
    schema = { ...schema, description };
  }
  return schema;
}

function enumSchema(names: string[], direction: Direction): Obj {
  // Responses use names; requests may also send the numbers.
  return direction === "output"
    ? { type: "string", enum: names }
    : { oneOf: [{ type: "string", enum: names }, { type: "integer" }] };
}

function scalarSchema(scalar: ScalarType, direction: Direction): Obj {
  switch (scalar) {
    case ScalarType.DOUBLE:
      return { type: "number", format: "double" };
    case ScalarType.FLOAT:
      return { type: "number", format: "float" };
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return { type: "integer", format: "int32" };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: "integer", format: "uint32", minimum: 0 };
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return int64Schema("int64", direction);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return int64Schema("uint64", direction);
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BYTES:
      return { type: "string", format: "byte", contentEncoding: "base64" };
  }
}

/** Protobuf JSON: a decimal string (exact beyond 2^53); requests may also send a number. */
function int64Schema(format: "int64" | "uint64", direction: Direction): Obj {
  const pattern = format === "uint64" ? "^[0-9]+$" : "^-?[0-9]+$";
  if (direction === "output") return { type: "string", format, pattern };
  return {
    oneOf: [
      { type: "string", format, pattern },
      format === "uint64" ? { type: "integer", minimum: 0 } : { type: "integer" },
    ],
  };
}

/** Well-known types have their own JSON forms. */
function wellKnown(message: DescMessage, direction: Direction): Obj | undefined {
  switch (message.typeName) {
    case "google.protobuf.Timestamp":
      return { type: "string", format: "date-time", description: "RFC 3339, UTC (`Z`)" };
    case "google.protobuf.Duration":
      return {
        type: "string",
        pattern: "^-?[0-9]+(\\.[0-9]{1,9})?s$",
        description: "seconds with an `s` suffix, e.g. `1.5s`",
      };
    case "google.protobuf.FieldMask":
      return { type: "string", description: "comma-separated field paths" };
    case "google.protobuf.Empty":
      return { type: "object", additionalProperties: false };
    case "google.protobuf.Struct":
      return { type: "object" };
    case "google.protobuf.Value":
      return {};
    case "google.protobuf.ListValue":
      return { type: "array", items: {} };
    case "google.protobuf.BoolValue":
      return { type: ["boolean", "null"] };
    case "google.protobuf.StringValue":
      return { type: ["string", "null"] };
    case "google.protobuf.BytesValue":
      return { type: ["string", "null"], format: "byte" };
    case "google.protobuf.DoubleValue":
    case "google.protobuf.FloatValue":
      return { type: ["number", "null"] };
    case "google.protobuf.Int32Value":
    case "google.protobuf.UInt32Value":
      return { type: ["integer", "null"] };
    case "google.protobuf.Int64Value":
      return int64Schema("int64", direction);
    case "google.protobuf.UInt64Value":
      return int64Schema("uint64", direction);
    default:
      return undefined;
  }
}

// --- comments ------------------------------------------------------------------------

function commentOf(desc: DescService | DescMethod | DescMessage | DescField): string {
  const leading = getComments(desc).leading ?? "";
  return leading
    .split("\n")
    .map((line) => line.replace(/^ /, "").trimEnd())
    .join("\n")
    .trim();
}

function firstSentence(text: string): string {
  const flat = text.replace(/\s*\n\s*/g, " ");
  const end = flat.search(/\.(\s|$)/);
  return end === -1 ? flat : flat.slice(0, end + 1);
}
