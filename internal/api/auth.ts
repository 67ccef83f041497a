import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { requestCallerKey } from "./request-context.js";

export type Role = "reader" | "writer" | "admin";
const roleRank: Record<Role, number> = { reader: 1, writer: 2, admin: 3 };

/** Who made a call, as named in the tokens file (never the token). */
export interface Caller {
  name: string;
  role: Role;
}

/** What each call needs. A method missing here needs admin: a new RPC is closed until it is listed. */
export interface AccessPolicy {
  /** Services that need no token at all (health checking, for probes and load balancers). */
  openServices: ReadonlySet<string>;
  /** `service/method` → role, or `service/*` for every method of a service. */
  roles: Readonly<Record<string, Role>>;
}

export class AuthConfigError extends Error {
  override name = "AuthConfigError";
}

// Names go to logs and metric labels: short and label-safe.
const tokenEntry = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "1 to 64 letters, digits, '_', '.' or '-'"),
    // Random tokens: 16 characters is the least that is not guessable online.
    token: z.string().min(16, "at least 16 characters").optional(),
    tokenSha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, "64 hex digits (sha256 of the token)")
      .optional(),
    role: z.enum(["reader", "writer", "admin"]),
  })
  .strict()
  .refine((e) => (e.token === undefined) !== (e.tokenSha256 === undefined), {
    message: "exactly one of token and tokenSha256",
  });
const tokensFile = z.object({ tokens: z.array(tokenEntry).min(1, "at least one token") }).strict();

interface Entry extends Caller {
  digest: Buffer;
}

/** The tokens of AUTH_TOKENS_FILE, kept as sha256 digests. */
export class TokenTable {
  private constructor(private readonly entries: readonly Entry[]) {}

  static fromFile(path: string): TokenTable {
    let raw: unknown;
    try {
      raw = parseYaml(readFileSync(path, "utf8"));
    } catch (err) {
      throw new AuthConfigError(`auth.tokensFile ${path}: ${(err as Error).message}`);
    }
    const parsed = tokensFile.safeParse(raw);
    if (!parsed.success) {
      const problems = parsed.error.issues.map((i) => `${i.path.join(".") || "(top)"}: ${i.message}`);
      throw new AuthConfigError(`auth.tokensFile ${path}: ${problems.join("; ")}`);
    }
    const names = new Set<string>();
    const entries = parsed.data.tokens.map((e, i) => {
      if (names.has(e.name))
        throw new AuthConfigError(`auth.tokensFile ${path}: tokens.${i}.name: "${e.name}" is used twice`);
      names.add(e.name);
      const digest = e.token !== undefined ? sha256(e.token) : Buffer.from(e.tokenSha256!, "hex");
      return { name: e.name, role: e.role, digest };
    });
    return new TokenTable(entries);
  }

  /**
   * The caller whose token this is. Every entry is compared, in constant time,
   * so the time taken says nothing about which entry (if any) matched.
   */
  authenticate(token: string): Caller | undefined {
    const digest = sha256(token);
    let found: Entry | undefined;
    for (const entry of this.entries) {
      if (timingSafeEqual(entry.digest, digest) && found === undefined) found = entry;
    }
    return found === undefined ? undefined : { name: found.name, role: found.role };
  }

  get size(): number {
    return this.entries.length;
  }
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

export type AuthDecision = "allowed" | "unauthenticated" | "permission_denied";

export interface AuthInterceptorOptions {
  /** The current table (it changes on reload). */
  tokens: () => TokenTable;
  policy: AccessPolicy;
  onDecision?: (caller: string, decision: AuthDecision) => void;
}

/**
 * Checks `authorization: Bearer <token>` on every call (gRPC metadata or HTTP
 * header: the same on every protocol, REST included) against the caller's role.
 */
export function authInterceptor(options: AuthInterceptorOptions): Interceptor {
  const record = options.onDecision ?? (() => {});
  return (next) => async (req) => {
    const service = req.service.typeName;
    if (options.policy.openServices.has(service)) return next(req);
    const token = bearerToken(req.header.get("authorization"));
    if (token === undefined) {
      record("anonymous", "unauthenticated");
      throw new ConnectError(
        "missing bearer token: send the header authorization: Bearer <token>",
        Code.Unauthenticated,
      );
    }
    const caller = options.tokens().authenticate(token);
    if (caller === undefined) {
      record("unknown", "unauthenticated");
      throw new ConnectError("unknown or revoked token", Code.Unauthenticated);
    }
    req.contextValues.set(requestCallerKey, caller.name);
    const needed =
      options.policy.roles[`${service}/${req.method.name}`] ?? options.policy.roles[`${service}/*`] ?? "admin";
    if (roleRank[caller.role] < roleRank[needed]) {
      record(caller.name, "permission_denied");
      throw new ConnectError(
        `caller "${caller.name}" has role ${caller.role}; ${req.method.name} needs ${needed}`,
        Code.PermissionDenied,
      );
    }
    record(caller.name, "allowed");
    return next(req);
  };
}

function bearerToken(header: string | null): string | undefined {
  if (header === null) return undefined;
  const match = /^Bearer[ \t]+([^\s]+)[ \t]*$/i.exec(header);
  return match?.[1];
}
