import { writeConfigFile } from "../../test/helpers/config.js";
import { createTestDatabase, type TestDatabase } from "../../test/helpers/database.js";
import type { BenchContext } from "./context.js";
import { type BinaryProcess, freePorts, spawnBinary, waitReady } from "./procs.js";

// The pieces of one measurement, each registered for cleanup as it starts and
// stopped by the measurement itself when it is done with it.

export interface BenchDatabase extends TestDatabase {
  close(): Promise<void>;
}

/** A fresh database cloned from the migrated template (test/helpers/database.ts). */
export async function benchDatabase(ctx: BenchContext): Promise<BenchDatabase> {
  const tdb = await createTestDatabase();
  const close = ctx.resources.add(`database ${tdb.name}`, () => tdb.drop());
  return { ...tdb, close };
}

export async function benchTopic(ctx: BenchContext, name: string): Promise<string> {
  const topic = `bench-${name}-${Date.now().toString(36)}`;
  await ctx.kafka.createTopic(topic, ctx.config.partitions);
  return topic;
}

export type Tree = Record<string, unknown>;
const isTree = (v: unknown): v is Tree => typeof v === "object" && v !== null && !Array.isArray(v);

export function deepMerge(...trees: Tree[]): Tree {
  const out: Tree = {};
  for (const tree of trees) {
    for (const [key, value] of Object.entries(tree)) {
      const current = out[key];
      out[key] = isTree(value) && isTree(current) ? deepMerge(current, value) : value;
    }
  }
  return out;
}

/** A temp copy of config.yml with the run's overrides and `overrides` (CONFIG_PATH of a child). */
export async function configFile(ctx: BenchContext, overrides: Tree): Promise<string> {
  const file = await writeConfigFile(deepMerge({ grpc: { host: "127.0.0.1" } }, ctx.config.overrides, overrides));
  ctx.resources.add(`config ${file.path}`, () => file.cleanup());
  return file.path;
}

// Production settings except: loopback only, no telemetry exporters (the SDK
// would otherwise try to reach a collector), logs at the default level (info)
// into a file.
const childEnv = {
  LOG_LEVEL: "info",
  OTEL_METRICS_EXPORTER: "none",
  OTEL_LOGS_EXPORTER: "none",
  OTEL_TRACES_EXPORTER: "none",
};

function nodeArgs(ctx: BenchContext, label: string): string[] {
  return ctx.config.profile
    ? ["--cpu-prof", `--cpu-prof-dir=${ctx.profileDir}`, `--cpu-prof-name=${label}.cpuprofile`]
    : [];
}

export interface RunningBinary {
  proc: BinaryProcess;
  stop(): Promise<void>;
}

export interface RunningRetranslator extends RunningBinary {
  metricsUrl: string;
}

/**
 * The children's database URL. With BENCH_DATABASE_SOCKET (a directory, e.g.
 * /var/run/postgresql) they connect over Postgres' Unix socket instead of TCP
 * on loopback, to tell how much of the binaries' CPU in socket writes is the
 * TCP stack's (docs/performance.md: within noise of it, on this machine).
 */
function childDatabaseUrl(url: string): string {
  const socketDir = process.env.BENCH_DATABASE_SOCKET;
  if (socketDir === undefined || socketDir === "") return url;
  const viaSocket = new URL(url);
  viaSocket.searchParams.set("host", socketDir);
  return viaSocket.toString();
}

/** The retranslator binary as a child process (as deployed), ready when /ready answers. */
export async function startRetranslatorChild(
  ctx: BenchContext,
  label: string,
  options: { databaseUrl: string; topic: string; listenNotify?: boolean; retranslator?: Tree },
): Promise<RunningRetranslator> {
  const configPath = await configFile(ctx, {
    retranslator: { listenNotify: options.listenNotify ?? true, ...options.retranslator },
  });
  const [metricsPort] = await freePorts(1);
  const proc = spawnBinary(
    "retranslator",
    label,
    {
      ...childEnv,
      CONFIG_PATH: configPath,
      DATABASE_URL: childDatabaseUrl(options.databaseUrl),
      KAFKA_BROKERS: ctx.kafka.brokers.join(","),
      KAFKA_TOPIC: options.topic,
      RETRANSLATOR_METRICS_PORT: String(metricsPort),
    },
    ctx.logDir,
    nodeArgs(ctx, label),
  );
  const stop = ctx.resources.add(`retranslator ${label}`, async () => void (await proc.stop()));
  const metricsUrl = `http://127.0.0.1:${metricsPort}`;
  await waitReady(`${metricsUrl}/ready`, proc);
  return { proc, stop, metricsUrl };
}

export interface RunningServer extends RunningBinary {
  grpcAddress: string;
}

/** The grpc-server binary as a child process, ready when /ready answers. */
export async function startServerChild(
  ctx: BenchContext,
  label: string,
  databaseUrl: string,
  overrides: Tree = {},
): Promise<RunningServer> {
  const configPath = await configFile(ctx, overrides);
  const [grpcPort, gatewayPort, statusPort, metricsPort] = await freePorts(4);
  const proc = spawnBinary(
    "grpc-server",
    label,
    {
      ...childEnv,
      CONFIG_PATH: configPath,
      DATABASE_URL: childDatabaseUrl(databaseUrl),
      GRPC_PORT: String(grpcPort),
      GATEWAY_PORT: String(gatewayPort),
      STATUS_PORT: String(statusPort),
      METRICS_PORT: String(metricsPort),
    },
    ctx.logDir,
    nodeArgs(ctx, label),
  );
  const stop = ctx.resources.add(`grpc-server ${label}`, async () => void (await proc.stop()));
  await waitReady(`http://127.0.0.1:${statusPort}/ready`, proc);
  return { proc, stop, grpcAddress: `127.0.0.1:${grpcPort}` };
}
