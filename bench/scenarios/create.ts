import knexFactory from "knex";
import pg from "pg";
import type { Database } from "../../internal/database/database.js";
import { PgPackageRepository } from "../../internal/packages/package-repo.js";
import { packageApiClient } from "../../test/helpers/grpc-client.js";
import type { BenchContext } from "../lib/context.js";
import { type CpuWindow, cpuWindow, postgresBackends, round } from "../lib/cpu.js";
import { benchDatabase, startServerChild } from "../lib/stack.js";
import { fmtInt, fmtMs, percentile } from "../lib/stats.js";

export interface LoadResult {
  concurrency: number;
  seconds: number;
  completed: number;
  errors: number;
  firstError?: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  cpu: CpuWindow;
  /** CPU per completed call by component (load generator = "bench"), µs. */
  cpuMicrosPerCall: Record<string, number>;
}

export interface CreateResult {
  concurrency: number;
  /** The server as configured by default (grpc-js for native gRPC, group commit on). */
  grpc: LoadResult;
  /** The bound: the repository's create statement straight on Postgres. */
  sql: LoadResult;
  ratio: number;
  /** The same load against other server settings, for comparison (same run). */
  variants: { name: string; overrides: Record<string, unknown>; grpc: LoadResult; ratio: number }[];
}

/** Server settings measured beside the default, each with its own server process. */
const variants: { name: string; overrides: Record<string, unknown> }[] = [
  { name: "no group commit (database.createBatchSize 1)", overrides: { database: { createBatchSize: 1 } } },
  { name: "connect-node for native gRPC (grpc.nativeGrpcJs false)", overrides: { grpc: { nativeGrpcJs: false } } },
];

const input = { title: "bench box", material: "cardboard", maximumVolume: 1200, reusable: true };

/**
 * The exact statement PgPackageRepository.create sends (one CTE: package +
 * event), captured from the repository itself through a recording stand-in
 * for the database, so the bound cannot drift from the code.
 */
async function createStatement(): Promise<{ name?: string; text: string; values: unknown[] }> {
  let captured: { sql: string; bindings: readonly unknown[]; name?: string } | undefined;
  const recorder = {
    raw: (sql: string, bindings: readonly unknown[]) => {
      const record: NonNullable<typeof captured> = { sql, bindings };
      captured = record;
      const result = Promise.resolve({ rows: [{ id: 1n }] });
      // As knex does: the statement's pg options (its prepared-statement name) come through options().
      return Object.assign(result, {
        options: (options: { name?: string }) => {
          if (options.name !== undefined) record.name = options.name;
          return result;
        },
      });
    },
  } as unknown as Database;
  await new PgPackageRepository(recorder).create(input, undefined);
  if (captured === undefined) throw new Error("PgPackageRepository.create sent no statement");
  const knex = knexFactory({ client: "pg" });
  try {
    const native = knex
      .raw(captured.sql, captured.bindings as never)
      .toSQL()
      .toNative();
    return {
      ...(captured.name === undefined ? {} : { name: captured.name }),
      text: native.sql,
      values: [...native.bindings],
    };
  } finally {
    await knex.destroy();
  }
}

/**
 * A closed loop: `concurrency` calls always in flight for warm-up + `seconds`.
 * Throughput counts the calls completed inside the measured window; latency
 * is each of those calls' own time.
 */
export async function closedLoop(
  concurrency: number,
  warmupSeconds: number,
  seconds: number,
  call: (worker: number) => Promise<unknown>,
  cpuComponents: Record<string, () => number[]>,
): Promise<LoadResult> {
  const warmEnd = performance.now() + warmupSeconds * 1000;
  const end = warmEnd + seconds * 1000;
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  let endCpu: (() => CpuWindow) | undefined;
  const cpuTimer = setTimeout(() => (endCpu = cpuWindow(cpuComponents)), Math.max(0, warmEnd - performance.now()));
  await Promise.all(
    Array.from({ length: concurrency }, async (_, worker) => {
      // Bounded by the clock: each iteration is one call with a 15 s deadline.
      while (performance.now() < end) {
        const started = performance.now();
        try {
          await call(worker);
          const done = performance.now();
          if (done >= warmEnd && done <= end) latencies.push(done - started);
        } catch (err) {
          errors += 1;
          firstError ??= (err as Error).message;
        }
      }
    }),
  );
  clearTimeout(cpuTimer);
  const cpu = endCpu?.() ?? { wallSeconds: 0, machineBusyCores: 0, othersCores: 0, cpuSeconds: {} };
  latencies.sort((a, b) => a - b);
  const result: LoadResult = {
    concurrency,
    seconds,
    completed: latencies.length,
    errors,
    rps: round(latencies.length / seconds),
    p50Ms: round(percentile(latencies, 50), 2),
    p99Ms: round(percentile(latencies, 99), 2),
    maxMs: round(latencies.at(-1) ?? NaN, 2),
    cpu,
    cpuMicrosPerCall: Object.fromEntries(
      Object.entries(cpu.cpuSeconds).map(([k, v]) => [k, round((v * 1e6) / Math.max(1, latencies.length))]),
    ),
  };
  if (firstError !== undefined) result.firstError = firstError;
  return result;
}

/**
 * Create RPC: a @grpc/grpc-js client (built from the protos, as
 * test/helpers/grpc-client.ts) keeps `concurrency` CreatePackageV1 calls in
 * flight against the grpc-server binary (a child process, production config:
 * pool of database.maxConnections); the bound is the same statement run by
 * `concurrency` pg clients of their own. The load generator runs in this
 * process and shares the 2 cores with the server and Postgres. Each variant
 * (another server setting) gets a server of its own and the same load.
 */
export async function createRpc(ctx: BenchContext): Promise<CreateResult[]> {
  const c = ctx.config;
  const db = await benchDatabase(ctx);
  const servers = [
    { name: "default", overrides: {}, server: await startServerChild(ctx, "create-grpc-server", db.url) },
    ...(await Promise.all(
      variants.map(async (v, i) => ({
        ...v,
        server: await startServerChild(ctx, `create-grpc-server-variant-${i + 1}`, db.url, v.overrides),
      })),
    )),
  ];
  const clients = servers.map(({ server }) => packageApiClient(server.grpcAddress));
  const closeClients = ctx.resources.add("grpc clients", async () => {
    for (const cl of clients) cl.close();
  });
  const statement = await createStatement();
  const results: CreateResult[] = [];
  try {
    for (const concurrency of c.createConcurrency) {
      const loads: LoadResult[] = [];
      for (const [i, { name, server }] of servers.entries()) {
        ctx.log(`create RPC (${name}): gRPC, ${concurrency} in flight, ${c.createWarmupSeconds}+${c.createSeconds} s`);
        const load = await closedLoop(
          concurrency,
          c.createWarmupSeconds,
          c.createSeconds,
          () =>
            clients[i]!.createPackageV1({
              Title: input.title,
              Material: input.material,
              MaximumVolume: input.maximumVolume,
              Reusable: input.reusable,
            }),
          {
            bench: () => [process.pid],
            "grpc-server": () => [server.proc.pid],
            postgres: () => postgresBackends(db.name),
          },
        );
        ctx.log(
          `create RPC (${name}) c=${concurrency}: ${fmtInt(load.rps)} rps, p50 ${fmtMs(load.p50Ms)} ms, p99 ${fmtMs(load.p99Ms)} ms`,
        );
        loads.push(load);
      }
      const sql = await sqlBound(ctx, db.url, db.name, statement, concurrency);
      const [grpc, ...others] = loads;
      results.push({
        concurrency,
        grpc: grpc!,
        sql,
        ratio: round(grpc!.rps / sql.rps, 2),
        variants: others.map((load, i) => ({ ...variants[i]!, grpc: load, ratio: round(load.rps / sql.rps, 2) })),
      });
    }
    return results;
  } finally {
    await closeClients();
    for (const { server } of servers) await server.stop();
    await db.close();
  }
}

async function sqlBound(
  ctx: BenchContext,
  url: string,
  databaseName: string,
  statement: { name?: string; text: string; values: unknown[] },
  concurrency: number,
): Promise<LoadResult> {
  const c = ctx.config;
  ctx.log(`create RPC: SQL alone, ${concurrency} pg clients`);
  const clients: pg.Client[] = [];
  const closeClients = ctx.resources.add("pg clients", async () => {
    await Promise.all(clients.map((cl) => cl.end().catch(() => undefined)));
  });
  try {
    for (let i = 0; i < concurrency; i++) {
      const cl = new pg.Client({ connectionString: url, application_name: "lpa-bench" });
      await cl.connect();
      clients.push(cl);
    }
    const sql = await closedLoop(
      concurrency,
      c.createWarmupSeconds,
      c.createSeconds,
      // Prepared like the server's (a name), so both sides parse and plan it once per connection.
      (worker) => clients[worker]!.query({ name: statement.name, text: statement.text, values: statement.values }),
      { bench: () => [process.pid], postgres: () => postgresBackends(databaseName) },
    );
    ctx.log(
      `create RPC: SQL c=${concurrency}: ${fmtInt(sql.rps)} rps, p50 ${fmtMs(sql.p50Ms)} ms, p99 ${fmtMs(sql.p99Ms)} ms`,
    );
    return sql;
  } finally {
    await closeClients();
  }
}
