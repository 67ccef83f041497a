import { join } from "node:path";
import type { KafkaMock } from "../../test/helpers/kafka-mock.js";
import type { Resources } from "./resources.js";

export type BenchMode = "quick" | "full" | "smoke";

export interface BenchConfig {
  /**
   * "smoke" runs every step at a size that only shows the bench still works (its figures
   * mean nothing); the test suite runs it (test/bench-smoke.test.ts).
   */
  mode: BenchMode;
  /** Events seeded for the relay drain, its bounds and the scale test. */
  drainEvents: number;
  /** Events run through each relay / bound before its clock starts (see drain.ts). */
  warmupEvents: number;
  /** Packages the seeded events are spread over (round robin, as interleaved traffic). */
  packages: number;
  /** Partitions of every bench topic: the mock keeps ~5 MiB per partition. */
  partitions: number;
  createConcurrency: number[];
  createWarmupSeconds: number;
  createSeconds: number;
  e2eRatePerSecond: number;
  e2eSeconds: number;
  /**
   * Before the target phase, the first seconds at the same rate of a server and a relay just
   * started (JIT not warm yet): reported as a phase of its own, since the goal is the steady
   * state's and a deploy under traffic is a state production reaches too. 0 = skipped.
   */
  e2eColdSeconds: number;
  /** The second phase, at a rate the machine carries easily (a quarter of the measured create throughput). */
  e2eSustainableSeconds: number;
  /** 0 = skipped (quick and smoke modes). */
  memoryEvents: number;
  /** How long each binary sits idle before its resting RSS is read. */
  restSettleSeconds: number;
  /** Children started with `node --cpu-prof` (profiles in bench/results/profiles). */
  profile: boolean;
  /** config.yml keys changed for this run (`--set key=value`): the children and the bounds use them. */
  overrides: Record<string, unknown>;
}

export interface BenchContext {
  config: BenchConfig;
  resources: Resources;
  kafka: KafkaMock;
  /** Per-run directory of the children's logs (and the temp configs). */
  logDir: string;
  profileDir: string;
  /** A progress line, prefixed with the time since the bench started. */
  log(line: string): void;
}

/** A config for suites that only drain (relay-v2, kafka-clients): no create, end-to-end or memory scenario. */
export function drainOnlyConfig(
  drain: Pick<BenchConfig, "mode" | "drainEvents" | "warmupEvents" | "packages" | "partitions"> &
    Partial<Pick<BenchConfig, "overrides">>,
): BenchConfig {
  return {
    createConcurrency: [],
    createWarmupSeconds: 0,
    createSeconds: 0,
    e2eRatePerSecond: 0,
    e2eSeconds: 0,
    e2eColdSeconds: 0,
    e2eSustainableSeconds: 0,
    memoryEvents: 0,
    restSettleSeconds: 0,
    profile: false,
    overrides: {},
    ...drain,
  };
}

/**
 * Where a suite writes its results: bench/results, or BENCH_RESULTS_DIR (the smoke test's
 * temporary directory, so that a test run never replaces the committed figures).
 */
export function resultsDir(root: string): string {
  return process.env.BENCH_RESULTS_DIR ?? join(root, "bench/results");
}
