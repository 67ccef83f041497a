import { fromJsonString, toJsonString } from "@bufbuild/protobuf";
import type { Redis } from "ioredis";
import { type Package, PackageSchema } from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";

/**
 * Keys (all under the configured prefix, so deployments can share a Redis):
 *   package:<id>       the package as protobuf JSON with the id of the newest event it
 *                      is known to reflect: {"v":"<event id>","p":{…}}; TTL ttlSeconds.
 *   package:<id>:seen  a hash: `seen` = the newest package event id applied, `gen` = a
 *                      counter bumped by every change (event or the bot's own write);
 *                      TTL versionTtlSeconds, longer than the entry's.
 *
 * Every write is one Lua script, so it is atomic with the checks it depends on:
 * - an event is applied only when its id is above `seen` (a late or repeated copy of
 *   an older event changes nothing);
 * - a fill after a miss carries the `gen` read with the miss and is dropped when
 *   `gen` moved meanwhile: a Describe that read the API before an Update cannot
 *   put the old state back after the Update's invalidation or event.
 */
export interface PackageCacheOptions {
  keyPrefix: string;
  ttlSeconds: number;
  versionTtlSeconds: number;
}

export type CacheRead = { hit: true; pkg: Package } | { hit: false; token: string };
export type EventOutcome = "set" | "removed" | "stale";

// Event ids are decimal uint64 strings without leading zeros: Lua's numbers are
// doubles, so they are compared as strings (longer is larger, else lexically).
const newer = `
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
`;

const scripts = {
  cacheRead: {
    numberOfKeys: 2,
    lua: `
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
return {0, redis.call('HGET', KEYS[2], 'gen') or '0'}
`,
  },
  cacheFill: {
    numberOfKeys: 2,
    // ARGV: gen read with the miss, package JSON, ttl seconds
    lua: `
local gen = redis.call('HGET', KEYS[2], 'gen') or '0'
if gen ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local seen = redis.call('HGET', KEYS[2], 'seen') or '0'
redis.call('SET', KEYS[1], '{"v":"' .. seen .. '","p":' .. ARGV[2] .. '}', 'EX', ARGV[3])
return 1
`,
  },
  cacheInvalidate: {
    numberOfKeys: 2,
    // ARGV: version ttl seconds
    lua: `
redis.call('HINCRBY', KEYS[2], 'gen', 1)
redis.call('EXPIRE', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
`,
  },
  cacheApplyEvent: {
    numberOfKeys: 2,
    // ARGV: event id, package JSON ('' = removed), ttl seconds, version ttl seconds
    lua: `${newer}
local seen = redis.call('HGET', KEYS[2], 'seen')
if seen and not newer(ARGV[1], seen) then return 0 end
redis.call('HSET', KEYS[2], 'seen', ARGV[1])
redis.call('HINCRBY', KEYS[2], 'gen', 1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  return 2
end
redis.call('SET', KEYS[1], '{"v":"' .. ARGV[1] .. '","p":' .. ARGV[2] .. '}', 'EX', ARGV[3])
return 1
`,
  },
} as const;

type ScriptName = keyof typeof scripts;
type Scripted = Redis & Record<ScriptName, (k1: string, k2: string, ...args: string[]) => Promise<unknown>>;

/** The bot's Describe cache in Redis. Every method rejects when Redis fails; callers fall back to the API. */
export class PackageCache {
  private readonly redis: Scripted;

  constructor(
    redis: Redis,
    private readonly options: PackageCacheOptions,
  ) {
    for (const [name, s] of Object.entries(scripts))
      redis.defineCommand(name, { numberOfKeys: s.numberOfKeys, lua: s.lua });
    this.redis = redis as Scripted;
  }

  entryKey(id: bigint): string {
    return `${this.options.keyPrefix}package:${id}`;
  }

  versionKey(id: bigint): string {
    return `${this.options.keyPrefix}package:${id}:seen`;
  }

  /** The cached package, or on a miss the token a later fill must present. */
  async read(id: bigint): Promise<CacheRead> {
    const [found, value] = (await this.redis.cacheRead(this.entryKey(id), this.versionKey(id))) as [number, string];
    if (found === 1) {
      const entry = JSON.parse(value) as { v: string; p: unknown };
      return { hit: true, pkg: fromJsonString(PackageSchema, JSON.stringify(entry.p)) };
    }
    return { hit: false, token: value };
  }

  /** Stores what the API answered after a miss, unless the package changed since (then false). */
  async fill(id: bigint, token: string, pkg: Package): Promise<boolean> {
    const done = await this.redis.cacheFill(
      this.entryKey(id),
      this.versionKey(id),
      token,
      toJsonString(PackageSchema, pkg),
      String(this.options.ttlSeconds),
    );
    return done === 1;
  }

  /** After the bot's own Update or Remove: drops the entry and voids fills in flight. */
  async invalidate(id: bigint): Promise<boolean> {
    const deleted = await this.redis.cacheInvalidate(
      this.entryKey(id),
      this.versionKey(id),
      String(this.options.versionTtlSeconds),
    );
    return deleted === 1;
  }

  /** A package event: the entry becomes its state (or goes, for a removal) only when the event is newer than any seen. */
  async applyEvent(id: bigint, eventId: bigint, pkg: Package | undefined): Promise<EventOutcome> {
    const outcome = await this.redis.cacheApplyEvent(
      this.entryKey(id),
      this.versionKey(id),
      eventId.toString(),
      pkg === undefined ? "" : toJsonString(PackageSchema, pkg),
      String(this.options.ttlSeconds),
      String(this.options.versionTtlSeconds),
    );
    return outcome === 0 ? "stale" : outcome === 2 ? "removed" : "set";
  }
}
