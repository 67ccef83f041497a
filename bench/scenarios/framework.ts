import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { LogisticPackageApiService } from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import { packageApiClient } from "../../test/helpers/grpc-client.js";
import type { BenchContext } from "../lib/context.js";
import { type CpuWindow, cpuWindow, round } from "../lib/cpu.js";
import { openLoop } from "../lib/open-loop.js";
import { freePorts, spawnBinary, waitReady } from "../lib/procs.js";
import { fmtInt, fmtMs, percentile } from "../lib/stats.js";
import { closedLoop, type LoadResult } from "./create.js";

export interface FrameworkResult {
  protocol: string;
  engine: "grpc-js" | "connect-node";
  load: LoadResult;
}

/** The trivial handler at a fixed rate, as the end-to-end run sends creates: what a call costs the server there. */
export interface PacedFrameworkResult {
  protocol: string;
  engine: "grpc-js";
  rate: number;
  achievedRate: number;
  p99Ms: number;
  /** Server CPU per completed call, µs. */
  serverMicrosPerCall: number;
  /** The load generator's (this process'), µs per call. */
  generatorMicrosPerCall: number;
  /** Failed calls (the row shows them; the ceilings measured before stay). */
  errors: number;
  firstError?: string;
  cpu: CpuWindow;
}

const request = { Title: "t", Material: "m", MaximumVolume: 1, Reusable: false };

/**
 * The ceiling of each protocol's server stack: a trivial CreatePackageV1
 * (returns ID 1, no database, no interceptors) behind the grpc-server's own
 * listener, in a child process; `concurrency` calls in flight from this
 * process. A regression in the framework path shows here first.
 */
export async function frameworkCeiling(
  ctx: BenchContext,
  concurrency = 16,
): Promise<{ ceilings: FrameworkResult[]; paced: PacedFrameworkResult[] }> {
  const c = ctx.config;
  const results: FrameworkResult[] = [];
  const paced: PacedFrameworkResult[] = [];
  for (const engine of ["grpc-js", "connect"] as const) {
    const [grpcPort, statusPort] = await freePorts(2);
    const proc = spawnBinary(
      "bench/lib/trivial-server.ts",
      `trivial-${engine}`,
      { ENGINE: engine, GRPC_PORT: String(grpcPort), STATUS_PORT: String(statusPort) },
      ctx.logDir,
    );
    const stop = ctx.resources.add(`trivial server ${engine}`, async () => void (await proc.stop()));
    try {
      await waitReady(`http://127.0.0.1:${statusPort}/ready`, proc);
      const baseUrl = `http://127.0.0.1:${grpcPort}`;
      const cpu = { bench: () => [process.pid], server: () => [proc.pid] };
      const measure = async (protocol: string, call: () => Promise<unknown>, engineName: FrameworkResult["engine"]) => {
        ctx.log(`framework ceiling: ${protocol} (${engineName}), ${concurrency} in flight`);
        const load = await closedLoop(concurrency, c.createWarmupSeconds, c.createSeconds, call, cpu);
        ctx.log(`framework ceiling: ${protocol} (${engineName}): ${fmtInt(load.rps)} rps, p99 ${fmtMs(load.p99Ms)} ms`);
        results.push({ protocol, engine: engineName, load });
      };

      const grpcClient = packageApiClient(`127.0.0.1:${grpcPort}`);
      try {
        await measure(
          "native gRPC (stock grpc-js client)",
          () => grpcClient.createPackageV1(request),
          engine === "grpc-js" ? "grpc-js" : "connect-node",
        );
        if (engine === "grpc-js") {
          paced.push(await pacedFloor(ctx, () => grpcClient.createPackageV1(request), proc.pid));
        }
      } finally {
        grpcClient.close();
      }
      // The web protocols are connect-node's on either engine: measure them once.
      if (engine === "connect") continue;
      const sessions = new Http2SessionManager(baseUrl);
      const transports: [string, Transport][] = [
        ["Connect JSON over HTTP/1.1", createConnectTransport({ baseUrl, httpVersion: "1.1" })],
        [
          "Connect (binary) over HTTP/2",
          createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, sessionManager: sessions }),
        ],
        ["gRPC-Web over HTTP/1.1", createGrpcWebTransport({ baseUrl, httpVersion: "1.1" })],
      ];
      try {
        for (const [protocol, transport] of transports) {
          const client = createClient(LogisticPackageApiService, transport);
          await measure(protocol, () => client.createPackageV1(request), "connect-node");
        }
      } finally {
        sessions.abort();
      }
    } finally {
      await stop();
    }
  }
  return { ceilings: results, paced };
}

/**
 * The floor under the server's CPU per create at the end-to-end rate: the
 * same native gRPC call with nothing behind it, sent on the same schedule
 * (open loop, `e2eRatePerSecond`). At a fixed rate a server does the
 * per-call work of a lightly loaded one (a wake-up, a read and a write per
 * call, little to batch), which the closed loop at 16 in flight spreads over
 * several calls; the create's own CPU at that rate can only be above this.
 */
async function pacedFloor(
  ctx: BenchContext,
  call: () => Promise<unknown>,
  serverPid: number,
): Promise<PacedFrameworkResult> {
  const rate = ctx.config.e2eRatePerSecond;
  const protocol = "native gRPC (stock grpc-js client)";
  ctx.log(`framework floor: ${protocol} (grpc-js), ${fmtInt(rate)} calls/s for ${ctx.config.createSeconds} s`);
  const endCpu = cpuWindow({ bench: () => [process.pid], server: () => [serverPid] });
  const load = await openLoop({ rate, seconds: ctx.config.createSeconds, maxInFlight: 256, call });
  const cpu = endCpu();
  const completed = Math.max(1, load.latencies.length);
  const result: PacedFrameworkResult = {
    protocol,
    engine: "grpc-js",
    rate,
    achievedRate: round(load.latencies.length / load.loadSeconds),
    p99Ms: round(percentile(load.latencies, 99), 2),
    serverMicrosPerCall: round(((cpu.cpuSeconds.server ?? NaN) * 1e6) / completed),
    generatorMicrosPerCall: round(((cpu.cpuSeconds.bench ?? NaN) * 1e6) / completed),
    errors: load.errors,
    cpu,
  };
  if (load.firstError !== undefined) result.firstError = load.firstError;
  ctx.log(
    `framework floor: ${fmtInt(result.achievedRate)}/s, ${result.serverMicrosPerCall} µs server CPU per call, p99 ${fmtMs(result.p99Ms)} ms`,
  );
  return result;
}
