// The production build (`npm run build`): tsc compiles the binaries to plain
// JavaScript, which runs under node without tsx, loads no .ts file at run time,
// and keeps the migration names that databases migrated from the TypeScript
// sources have recorded.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { createDatabase, migrateLatest, migrationsDirectory } from "../internal/database/database.js";
import { createEmptyDatabase } from "./helpers/database.js";
import { type KafkaMock, startKafkaMock } from "./helpers/kafka-mock.js";
import { freePort } from "./helpers/ports.js";

const root = fileURLToPath(new URL("..", import.meta.url));
// A build of this run's own at the repository root (one level, like dist/: the
// compiled code finds package.json and db/ relative to itself), so that a
// dist/ in use by `make run` or the bench is never replaced under it.
const out = join(root, `.dist-test-${process.pid}`);
const binaries = ["grpc-server", "retranslator", "facade", "bot", "admin", "migrate"];

function run(command: string, args: string[], env: Record<string, string> = {}) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 240_000);
    child.once("error", reject);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

/** Starts a compiled binary with plain node (no --import tsx); `output()` is what it wrote so far. */
function startCompiled(binary: string, env: Record<string, string>) {
  const child: ChildProcess = spawn(process.execPath, [join(out, "cmd", binary, "main.js")], {
    cwd: root,
    // No writable temporary directory (the image's root filesystem may be read-only): tsx needed
    // one for its cache, the compiled build must not.
    env: { ...process.env, LOG_LEVEL: "info", TMPDIR: "/nonexistent/lpa-no-tmp", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return {
    output: () => output,
    exited,
    async stop(): Promise<number | null> {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    running: () => child.exitCode === null && child.signalCode === null,
  };
}

/** Polls `url` until it answers 200, or fails after 60 s or when the process exits. */
async function waitReady(url: string, proc: ReturnType<typeof startCompiled>): Promise<Response> {
  const deadline = Date.now() + 60_000;
  let last = "";
  while (Date.now() < deadline) {
    if (!proc.running()) assert.fail(`exited before ${url} answered 200:\n${proc.output()}`);
    try {
      const res = await fetch(url);
      if (res.status === 200) return res;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`${url} not ready within 60 s (${last}):\n${proc.output()}`);
}

before(async () => {
  // `npm run build` with the output moved: the script's own tsc invocation (tsconfig.build.json).
  const build = await run("npm", ["run", "--silent", "build", "--", "--outDir", out]);
  assert.equal(build.code, 0, `npm run build failed:\n${build.stdout}\n${build.stderr}`);
});

after(() => rmSync(out, { recursive: true, force: true }));

test("npm run build compiles one main.js per binary and every migration, with no TypeScript left to load", () => {
  for (const binary of binaries) assert.ok(existsSync(join(out, "cmd", binary, "main.js")), `cmd/${binary}/main.js`);
  for (const dir of ["db/migrations", "db/facade-migrations"]) {
    const sources = readdirSync(join(root, dir))
      .filter((f) => f.endsWith(".ts"))
      .map((f) => f.replace(/\.ts$/, ".js"));
    const compiled = readdirSync(join(out, dir)).filter((f) => f.endsWith(".js"));
    assert.deepEqual(compiled.sort(), sources.sort(), `${dir}: one .js per migration`);
  }
  const files = walk(out);
  assert.deepEqual(
    files.filter((f) => f.endsWith(".ts")),
    [],
    "no .ts in the build",
  );
  // No module of the build imports tsx or a TypeScript file (plain node cannot load them).
  const specifier = /(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']/g;
  for (const file of files.filter((f) => f.endsWith(".js"))) {
    for (const m of readFileSync(file, "utf8").matchAll(specifier)) {
      const spec = m[1]!;
      assert.ok(!/^tsx(\/|$)/.test(spec), `${relative(out, file)} imports ${spec}`);
      assert.ok(!/\.(ts|mts|cts)$/.test(spec), `${relative(out, file)} imports ${spec}`);
    }
  }
});

test("the compiled grpc-server starts with plain node, without a writable TMPDIR, and reports ready", async () => {
  const database = await createEmptyDatabase("build_api");
  const [grpc, gateway, status, metrics] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const server = startCompiled("grpc-server", {
    DATABASE_URL: database.url,
    GRPC_PORT: String(grpc),
    GATEWAY_PORT: String(gateway),
    STATUS_PORT: String(status),
    METRICS_PORT: String(metrics),
  });
  let exitCode: number | null;
  try {
    await waitReady(`http://127.0.0.1:${status}/ready`, server);
    const version = (await (await fetch(`http://127.0.0.1:${status}/version`)).json()) as { name?: string };
    assert.equal(version.name, "logistic-package-api", "/version reads package.json from the compiled layout");
  } finally {
    exitCode = await server.stop();
    await database.drop();
  }
  assert.equal(exitCode, 0, `graceful exit:\n${server.output()}`);
});

test("the compiled retranslator starts with plain node, without a writable TMPDIR, and reports ready against the broker", async () => {
  const database = await createEmptyDatabase("build_relay");
  const kafka: KafkaMock = await startKafkaMock();
  const port = await freePort();
  const relay = startCompiled("retranslator", {
    DATABASE_URL: database.url,
    KAFKA_BROKERS: kafka.brokers.join(","),
    KAFKA_TOPIC: "build-test-events",
    RETRANSLATOR_METRICS_PORT: String(port),
  });
  let exitCode: number | null;
  try {
    await waitReady(`http://127.0.0.1:${port}/ready`, relay);
  } finally {
    exitCode = await relay.stop();
    await kafka.stop();
    await database.drop();
  }
  assert.equal(exitCode, 0, `graceful exit:\n${relay.output()}`);
});

/**
 * The migrations of `directory` as the previous release had them: every one but the newest, applied
 * from the .ts sources the way that release applied them (knex's directory source over .ts files,
 * which records file names). Copied two levels below the root, as db/migrations is: a migration
 * imports its helpers from ../../internal/.
 */
function previousRelease(databaseUrl: string, directory: string, tableName: string) {
  const all = readdirSync(directory)
    .filter((f) => f.endsWith(".ts"))
    .sort();
  const previous = mkdtempSync(join(out, "previous-migrations-"));
  for (const f of all.slice(0, -1)) cpSync(join(directory, f), join(previous, f));
  const db = createDatabase({
    url: databaseUrl,
    maxConnections: 1,
    statementTimeoutMs: 0,
    acquireTimeoutMs: 10_000,
    applicationName: "lpa-test",
  });
  return {
    /** Every migration file name, the newest last. */
    all,
    db,
    apply: () => db.migrate.latest({ directory: previous, loadExtensions: [".ts"], tableName }),
    /** What knex has recorded as applied. */
    recorded: async () =>
      (
        (await db.raw(`SELECT id, name, migration_time FROM ${tableName} ORDER BY id`)) as {
          rows: { id: number; name: string; migration_time: Date }[];
        }
      ).rows,
    async remove() {
      await db.destroy();
      rmSync(previous, { recursive: true, force: true });
    },
  };
}

test("upgrade: a database migrated from the .ts sources is continued by the compiled migrate, names unchanged", async () => {
  const database = await createEmptyDatabase("build_upgrade");
  const release = previousRelease(database.url, migrationsDirectory, "knex_migrations");
  const { all, db, recorded } = release;
  try {
    assert.ok(all.length >= 2);
    await release.apply();
    const before = await recorded();
    assert.deepEqual(
      before.map((r) => r.name),
      all.slice(0, -1),
    );

    const first = await run(process.execPath, [join(out, "cmd", "migrate", "main.js")], { DATABASE_URL: database.url });
    assert.equal(first.code, 0, first.stderr);
    const afterUpgrade = await recorded();
    assert.deepEqual(
      afterUpgrade.slice(0, before.length),
      before,
      "the applied migrations are neither re-run nor renamed",
    );
    assert.deepEqual(
      afterUpgrade.map((r) => r.name),
      all,
      "the new migration is applied, recorded under its .ts name",
    );
    assert.match(first.stdout + first.stderr, new RegExp(all.at(-1)!.replace(/\./g, "\\.")));

    // Again with the compiled build, then from the sources (development): nothing left to apply.
    const second = await run(process.execPath, [join(out, "cmd", "migrate", "main.js")], {
      DATABASE_URL: database.url,
    });
    assert.equal(second.code, 0, second.stderr);
    assert.deepEqual(await migrateLatest(db), []);
    assert.deepEqual(await recorded(), afterUpgrade);
  } finally {
    await release.remove();
    await database.drop();
  }
});

test("the compiled admin CLI runs with plain node: --help, and exit 2 on bad arguments", async () => {
  const help = await run(process.execPath, [join(out, "cmd", "admin", "main.js"), "--help"]);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /republish --package ID/);
  const bad = await run(process.execPath, [join(out, "cmd", "admin", "main.js"), "dead-letters", "many"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /LIMIT must be an integer/);
});

test("the compiled facade creates and migrates its database, keeps recorded names, and reports ready", async () => {
  const database = await createEmptyDatabase("build_facade");
  const facadeDir = fileURLToPath(new URL("../db/facade-migrations", import.meta.url));
  const release = previousRelease(database.url, facadeDir, "facade_knex_migrations");
  const { all, recorded } = release;
  const kafka: KafkaMock = await startKafkaMock();
  await kafka.createTopic("build-test-facade", 1);
  const port = await freePort();
  let facade: ReturnType<typeof startCompiled> | undefined;
  let exitCode: number | null | undefined;
  try {
    await release.apply();
    const before = await recorded();
    facade = startCompiled("facade", {
      FACADE_DATABASE_URL: database.url,
      KAFKA_BROKERS: kafka.brokers.join(","),
      KAFKA_TOPIC: "build-test-facade",
      FACADE_METRICS_PORT: String(port),
    });
    await waitReady(`http://127.0.0.1:${port}/ready`, facade);
    const afterStart = await recorded();
    assert.deepEqual(
      afterStart.slice(0, before.length),
      before,
      "applied facade migrations are neither re-run nor renamed",
    );
    assert.deepEqual(
      afterStart.map((r) => r.name),
      all,
      "the new one is applied under its .ts name",
    );
  } finally {
    // Cleanup first (a failed assertion here would leave the broker running and hang the file).
    exitCode = await facade?.stop();
    await release.remove();
    await kafka.stop();
    await database.drop();
  }
  assert.equal(exitCode, 0, `graceful exit:\n${facade?.output()}`);
});
