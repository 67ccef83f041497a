import { writeFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { type Config, loadConfig } from "../../internal/config/config.js";
import type { TestCa } from "./certs.js";

// Config for tests. The apps take a Config object: in-process tests build one
// (testConfig) from the repository's config.yml, the environment overrides
// production would use, and typed overrides. Only a child process needs the
// YAML on disk (writeConfigFile).

/** The repository's config.yml, whatever the working directory. */
export const repoConfigPath = fileURLToPath(new URL("../../config.yml", import.meta.url));

type DeepPartial<T> = {
  [K in keyof T]?: T[K] extends readonly unknown[] ? T[K] : T[K] extends object ? DeepPartial<T[K]> : T[K];
};
/** Any subset of the config keys, nested as in config.yml. */
export type ConfigOverrides = DeepPartial<Config>;

type Tree = Record<string, unknown>;
const isTree = (v: unknown): v is Tree => typeof v === "object" && v !== null && !Array.isArray(v);

// Every key has a default, so a parsed Config holds them all: an override of a
// key it lacks is a typo, and one of another type would never pass the schema.
// The schema's checks across keys are test/config.test.ts's business.
function mergeKnown(target: Tree, overrides: Tree, at: string): void {
  for (const [key, value] of Object.entries(overrides)) {
    const path = at === "" ? key : `${at}.${key}`;
    if (!(key in target)) throw new Error(`test config: no key ${path}`);
    const current = target[key];
    if (isTree(current) && isTree(value)) mergeKnown(current, value, path);
    else if (typeof current !== typeof value || Array.isArray(current) !== Array.isArray(value)) {
      throw new Error(`test config: ${path} is a ${typeof current}, not a ${typeof value}`);
    } else target[key] = value;
  }
}

function deepFreeze<T>(value: T): Readonly<T> {
  if (typeof value === "object" && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/**
 * The Config an in-process app is started with: config.yml (or env.CONFIG_PATH)
 * and the environment variables in `env`, as in production; then the gRPC
 * host on loopback (tests listen on 127.0.0.1); then `overrides`.
 */
export function testConfig(env: Record<string, string> = {}, overrides: ConfigOverrides = {}): Readonly<Config> {
  const config = structuredClone(loadConfig({ path: env.CONFIG_PATH ?? repoConfigPath, env })) as Tree;
  mergeKnown(config, { grpc: { host: "127.0.0.1" } }, "");
  mergeKnown(config, overrides as Tree, "");
  return deepFreeze(config as Config);
}

function mergeInto(target: Tree, overrides: Tree): void {
  for (const [key, value] of Object.entries(overrides)) {
    const current = target[key];
    if (isTree(current) && isTree(value)) mergeInto(current, value);
    else target[key] = value;
  }
}

export interface ConfigFile {
  path: string;
  cleanup(): Promise<void>;
}

/**
 * config.yml with `overrides` deep-merged in, in a temp file, for a child
 * process's CONFIG_PATH (the child's own loadConfig checks it). Values are
 * written as given, so a test may also write what the schema refuses.
 */
export async function writeConfigFile(overrides: Tree): Promise<ConfigFile> {
  const base = (parseYaml(await readFile(repoConfigPath, "utf8")) ?? {}) as Tree;
  mergeInto(base, overrides);
  const dir = await mkdtemp(join(tmpdir(), "lpa-config-"));
  const path = join(dir, "config.yml");
  await writeFile(path, stringifyYaml(base));
  return { path, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** One entry of an auth.tokensFile (docs/security.md); roles are not checked here, the server checks them. */
export interface TokenEntry {
  name: string;
  token?: string;
  tokenSha256?: string;
  role: string;
}

/** An auth.tokensFile with `tokens`, written as `fileName` in `dir`; returns its path. */
export function writeTokensFile(dir: string, tokens: TokenEntry[], fileName = "tokens.yml"): string {
  const path = join(dir, fileName);
  writeFileSync(path, stringifyYaml({ tokens }));
  return path;
}

/**
 * The environment of a grpc-server with TLS (a certificate "server" from `ca`)
 * and these API tokens, as an operator sets it.
 */
export function secureServerEnv(ca: TestCa, tokens: TokenEntry[]): Record<string, string> {
  const cert = ca.issue("server");
  return {
    TLS_CERT_FILE: cert.certFile,
    TLS_KEY_FILE: cert.keyFile,
    AUTH_TOKENS_FILE: writeTokensFile(ca.dir, tokens),
  };
}
