// The deployment files (deploy/) checked as files: nothing here runs Docker.
// They must agree with the code they deploy: config.yml's ports, the environment
// names config.ts reads, package.json's scripts and dependencies, the metrics.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import http from "node:http";
import { builtinModules } from "node:module";
import type { AddressInfo } from "node:net";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { envOverrides, loadConfig } from "../internal/config/config.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const deploy = join(root, "deploy");
const read = (path: string) => readFileSync(join(root, path), "utf8");
const yamlFile = (path: string) => parseYaml(read(path)) as any;

const config = loadConfig({ path: join(root, "config.yml"), env: {} });
// Compose resolves YAML merge keys (`<<: *app`): so must the test.
const compose = parseYaml(read("deploy/docker-compose.yml"), { merge: true }) as any;
const services = compose.services as Record<string, any>;
const pkg = JSON.parse(read("package.json")) as {
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies?: Record<string, string>;
};

// --- small parsers -------------------------------------------------------------

/** A compose `environment` (mapping or list of K=V) as a record of strings. */
function envOf(service: any): Record<string, string> {
  const env = service.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map((entry: string) => {
        const i = entry.indexOf("=");
        return i < 0 ? [entry, ""] : [entry.slice(0, i), entry.slice(i + 1)];
      }),
    );
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? "" : String(v)]));
}

interface PortMapping {
  /** The host interface; undefined = every interface (compose's default). */
  hostIp: string | undefined;
  published: number;
  target: number;
}

/** Compose `ports` in short ("[ip:]host:container[/proto]") or long syntax. */
function portsOf(service: any): PortMapping[] {
  return (service.ports ?? []).map((p: unknown) => {
    if (typeof p === "object" && p !== null) {
      const long = p as { published: unknown; target: unknown; host_ip?: unknown };
      return {
        hostIp: long.host_ip === undefined ? undefined : String(long.host_ip),
        published: Number(long.published),
        target: Number(long.target),
      };
    }
    const parts = String(p)
      .replace(/\/(tcp|udp)$/, "")
      .split(":");
    assert.ok(parts.length >= 2, `port ${String(p)} publishes to a fixed host port`);
    return {
      hostIp: parts.length > 2 ? parts.slice(0, -2).join(":") : undefined,
      published: Number(parts[parts.length - 2]),
      target: Number(parts[parts.length - 1]),
    };
  });
}

/** depends_on as service -> condition (the list form means service_started). */
function dependsOn(service: any): Record<string, string> {
  const d = service.depends_on ?? {};
  if (Array.isArray(d)) return Object.fromEntries(d.map((name: string) => [name, "service_started"]));
  return Object.fromEntries(
    Object.entries(d).map(([name, v]) => [name, (v as { condition?: string }).condition ?? "service_started"]),
  );
}

/** A healthcheck `test` as one string (CMD / CMD-SHELL forms). */
function healthcheckText(service: any): string {
  const t = service.healthcheck?.test;
  if (t === undefined) return "";
  return Array.isArray(t) ? t.slice(1).join(" ") : String(t);
}

interface Instruction {
  keyword: string;
  args: string;
  stage: number;
}

/** Dockerfile instructions (continuations joined, comments dropped), each with its stage index. */
function parseDockerfile(text: string): Instruction[] {
  const logical: string[] = [];
  let current = "";
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (current === "" && /^\s*#/.test(line)) continue;
    if (current !== "" && /^\s*#/.test(line)) continue; // comment lines inside a continuation
    if (line.endsWith("\\")) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    current += line;
    if (current.trim() !== "") logical.push(current.trim());
    current = "";
  }
  let stage = -1;
  return logical.map((l) => {
    const m = /^(\S+)\s*(.*)$/.exec(l)!;
    const keyword = m[1]!.toUpperCase();
    if (keyword === "FROM") stage += 1;
    return { keyword, args: m[2]!, stage };
  });
}

/** The JSON array of an exec-form instruction (CMD ["a", "b"], HEALTHCHECK ... CMD [...]). */
function execForm(args: string): string[] {
  const start = args.indexOf("[");
  assert.ok(start >= 0, `exec form expected: ${args}`);
  return JSON.parse(args.slice(start)) as string[];
}

/** Runs a `node -e SCRIPT` healthcheck with `env`; resolves with its exit code. */
function runHealthcheck(command: string[], env: Record<string, string>): Promise<number | null> {
  assert.equal(command[0], "node", "the healthcheck runs node (the slim image has no curl or wget)");
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, command.slice(1), {
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: "ignore",
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("error", reject);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolvePromise(code);
    });
  });
}

const dockerfile = parseDockerfile(read("deploy/Dockerfile"));
const runtimeStage = Math.max(...dockerfile.map((i) => i.stage));
const runtime = dockerfile.filter((i) => i.stage === runtimeStage);
const healthcheck = runtime.find((i) => i.keyword === "HEALTHCHECK");

// --- docker-compose.yml ---------------------------------------------------------

test("docker-compose.yml has every service of the stack, Kafka in KRaft mode and no ZooKeeper", () => {
  for (const name of [
    "postgres",
    "kafka",
    "jaeger",
    "prometheus",
    "grafana",
    "grpc-server",
    "retranslator",
    "facade",
    "bot",
  ]) {
    assert.ok(services[name], `service ${name} is defined`);
  }
  for (const [name, service] of Object.entries(services)) {
    assert.doesNotMatch(
      `${name} ${String(service.image ?? "")}`,
      /zookeeper/i,
      "no ZooKeeper: Kafka runs in KRaft mode",
    );
  }
  const kafka = envOf(services.kafka);
  assert.match(String(services.kafka.image), /^apache\/kafka:4\.\d+\.\d+$/, "Kafka 4 (KRaft only)");
  const roles = kafka.KAFKA_PROCESS_ROLES!.split(",").map((r) => r.trim());
  assert.deepEqual(roles.sort(), ["broker", "controller"]);
  assert.ok(!Object.keys(kafka).some((k) => /ZOOKEEPER/.test(k)), "no zookeeper.connect");
  // The single voter is this node, on the CONTROLLER listener.
  const controllerPort = /CONTROLLER:\/\/[^:]*:(\d+)/.exec(kafka.KAFKA_LISTENERS!)?.[1];
  assert.equal(kafka.KAFKA_CONTROLLER_QUORUM_VOTERS, `${kafka.KAFKA_NODE_ID}@kafka:${controllerPort}`);
  assert.equal(kafka.KAFKA_CONTROLLER_LISTENER_NAMES, "CONTROLLER");
  assert.equal(kafka.KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR, "1");
  assert.equal(kafka.KAFKA_AUTO_CREATE_TOPICS_ENABLE, "false");
  // The retranslator reaches the broker at the address the broker advertises.
  assert.equal(kafka.KAFKA_ADVERTISED_LISTENERS, `PLAINTEXT://${envOf(services.retranslator).KAFKA_BROKERS}`);
  // The retranslator creates its topic itself, within what a one-broker cluster allows.
  assert.equal(config.kafka.replicationFactor, 1);
});

test("the binaries listen on config.yml's ports, and compose publishes only the API's, as themselves", () => {
  const grpcServer = loadConfig({ path: join(root, "config.yml"), env: envOf(services["grpc-server"]) });
  assert.deepEqual(
    [grpcServer.grpc.port, grpcServer.gateway.port, grpcServer.status.port, grpcServer.metrics.port],
    [8082, 8080, 8000, 9100],
    "the documented ports",
  );
  const published = portsOf(services["grpc-server"]);
  assert.deepEqual(
    published.map((m) => m.target).sort(),
    [grpcServer.gateway.port, grpcServer.grpc.port].sort(),
    "gRPC/Connect and REST are published; status and metrics are not",
  );
  for (const m of published) assert.equal(m.published, m.target, `grpc-server publishes ${m.target} as itself`);
  assert.deepEqual(portsOf(services.retranslator), [], "the retranslator's metrics port stays inside");
  assert.deepEqual(portsOf(services.facade), [], "the facade's metrics port stays inside");
  for (const name of ["grpc-server", "retranslator", "facade"]) {
    // Prometheus and other containers reach every listener over the compose network.
    const effective = loadConfig({ path: join(root, "config.yml"), env: envOf(services[name]) });
    assert.equal(effective.grpc.host, "0.0.0.0", `${name}: listeners reachable from other containers`);
    assert.equal(effective.status.host, "", `${name}: status on grpc.host`);
    assert.equal(effective.metrics.host, "", `${name}: metrics on grpc.host`);
  }
});

test("compose publishes nothing on every interface: each published port is bound to 127.0.0.1", () => {
  const all = Object.entries(services).flatMap(([name, service]) => portsOf(service).map((m) => ({ name, ...m })));
  for (const m of all) assert.equal(m.hostIp, "127.0.0.1", `${m.name} publishes ${m.published} on loopback only`);
  // What a developer opens, and nothing else: the API, the Jaeger, Prometheus and Grafana UIs.
  assert.deepEqual(all.map((m) => `${m.name}:${m.published}`).sort(), [
    "grafana:3000",
    "grpc-server:8080",
    "grpc-server:8082",
    "jaeger:16686",
    "prometheus:9090",
  ]);
  for (const name of ["postgres", "kafka"]) assert.equal(services[name].ports, undefined, `${name} is not published`);
});

test("Grafana: anonymous visitors are Viewers at most, the admin password comes from the environment", () => {
  const env = envOf(services.grafana);
  if (env.GF_AUTH_ANONYMOUS_ENABLED === "true") {
    assert.equal(env.GF_AUTH_ANONYMOUS_ORG_ROLE, "Viewer", "anonymous access may only view");
  } else {
    assert.ok(["false", undefined].includes(env.GF_AUTH_ANONYMOUS_ENABLED));
  }
  assert.match(env.GF_SECURITY_ADMIN_PASSWORD ?? "", /^\$\{GRAFANA_ADMIN_PASSWORD:-[^}]+\}$/);
  assert.equal(env.GF_USERS_ALLOW_SIGN_UP, "false");
});

test("the binaries' environment uses only names config.ts reads, and points at the compose services", () => {
  // NODE_OPTIONS is read by node itself (the retranslator's heap settings).
  const accepted = new Set([
    ...Object.keys(envOverrides),
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "CONFIG_PATH",
    "COMMIT_HASH",
    "NODE_OPTIONS",
  ]);
  const postgres = envOf(services.postgres);
  for (const name of ["grpc-server", "retranslator"]) {
    const env = envOf(services[name]);
    for (const key of Object.keys(env)) assert.ok(accepted.has(key), `${name}: ${key} is not read by the binaries`);
    // Every value is valid for config.ts (a bad one would stop start-up).
    const effective = loadConfig({ path: join(root, "config.yml"), env });
    const db = new URL(effective.database.url);
    assert.equal(db.hostname, "postgres", `${name} connects to the postgres service`);
    assert.equal(db.port, "5432");
    assert.equal(db.pathname, `/${postgres.POSTGRES_DB}`, "the database the postgres service creates");
    assert.equal(db.pathname, "/logistic_package_api");
    assert.equal(decodeURIComponent(db.username), postgres.POSTGRES_USER ?? "postgres");
    assert.equal(decodeURIComponent(db.password), postgres.POSTGRES_PASSWORD);
    assert.equal(effective.database.migrateOnStart, true, "the binaries create the schema themselves");
    assert.equal(
      effective.tracing.otlpEndpoint,
      "http://jaeger:4318",
      `${name} exports traces to Jaeger over OTLP/HTTP`,
    );
  }
  const relay = loadConfig({ path: join(root, "config.yml"), env: envOf(services.retranslator) });
  assert.deepEqual(relay.kafka.brokers, ["kafka:9092"]);
  // Jaeger v2 receives OTLP in its default configuration.
  assert.match(String(services.jaeger.image), /^jaegertracing\/jaeger:2\.\d+\.\d+$/);
  // The binaries export over the compose network; only the UI is published.
  assert.ok(!portsOf(services.jaeger).some((p) => p.target === 4318), "OTLP/HTTP not published");
  assert.ok(
    portsOf(services.jaeger).some((p) => p.target === 16686),
    "Jaeger UI published",
  );
});

test("the compose bot reaches its Redis cache and the broker, and is checked on /live", () => {
  const bot = loadConfig({
    path: join(root, "config.yml"),
    // The keys this test is about; the others are ${…} of the operator's shell.
    env: Object.fromEntries(
      Object.entries(envOf(services.bot)).filter(([k]) =>
        ["REDIS_URL", "KAFKA_BROKERS", "BOT_METRICS_PORT"].includes(k),
      ),
    ),
  });
  assert.equal(bot.bot.cache.redisUrl, "redis://redis:6379");
  assert.deepEqual(bot.kafka.brokers, ["kafka:9092"]);
  assert.ok(services.redis, "a redis service runs beside the bot");
  assert.deepEqual(services.redis.profiles, services.bot.profiles, "redis starts with the bot's profile");
  assert.equal(dependsOn(services.bot).redis, "service_healthy");
  assert.match(JSON.stringify(services.bot.healthcheck.test), new RegExp(`:${bot.bot.metricsPort}/live`));
});

test("start order waits for healthy dependencies, and every awaited service has a healthcheck", () => {
  assert.equal(dependsOn(services["grpc-server"]).postgres, "service_healthy");
  const relay = dependsOn(services.retranslator);
  assert.equal(relay.postgres, "service_healthy");
  assert.equal(relay.kafka, "service_healthy");
  for (const [name, service] of Object.entries(services)) {
    for (const [dep, condition] of Object.entries(dependsOn(service))) {
      assert.ok(services[dep], `${name} depends on an existing service ${dep}`);
      if (condition !== "service_healthy") continue;
      const own = services[dep].healthcheck?.test !== undefined;
      const fromImage = services[dep].build !== undefined && healthcheck !== undefined;
      assert.ok(own || fromImage, `${name} waits for ${dep} to be healthy: ${dep} needs a healthcheck`);
    }
  }
  assert.match(healthcheckText(services.postgres), /pg_isready/);
  assert.match(healthcheckText(services.postgres), /-d logistic_package_api/);
  assert.match(
    healthcheckText(services.kafka),
    /\/opt\/kafka\/bin\/kafka-broker-api-versions\.sh --bootstrap-server localhost:9092/,
  );
});

test("healthchecks ask /ready on each binary's own port", () => {
  assert.ok(healthcheck, "the image has a HEALTHCHECK");
  const image = execForm(healthcheck.args.slice(healthcheck.args.indexOf("CMD")));
  const imageScript = image.join(" ");
  assert.match(imageScript, /\/ready/);
  assert.ok(
    imageScript.includes(`process.env.STATUS_PORT||${config.status.port}`),
    "grpc-server: STATUS_PORT, default status.port",
  );
  // The grpc-server keeps the image's check (or repeats it); the retranslator has no status server and overrides it.
  const own = healthcheckText(services["grpc-server"]);
  if (own !== "") assert.ok(own.includes(String(config.status.port)) || own.includes("STATUS_PORT"));
  const relay = services.retranslator.healthcheck?.test as string[];
  assert.ok(Array.isArray(relay) && relay[0] === "CMD", "retranslator overrides the image's healthcheck (exec form)");
  const relayScript = relay.join(" ");
  assert.match(relayScript, /\/ready/);
  assert.ok(
    relayScript.includes(`process.env.RETRANSLATOR_METRICS_PORT||${config.retranslator.metricsPort}`),
    "retranslator: RETRANSLATOR_METRICS_PORT, default retranslator.metricsPort",
  );
  for (const name of ["grpc-server", "retranslator"]) {
    assert.doesNotMatch(
      JSON.stringify(services[name].healthcheck ?? {}),
      /curl|wget/,
      "no curl or wget in node:20-bookworm-slim",
    );
  }
  assert.doesNotMatch(healthcheck.args, /curl|wget/);
});

test("the healthcheck commands work: 0 for a 200 /ready, 1 for 503 and for a closed port", async () => {
  const image = execForm(healthcheck!.args.slice(healthcheck!.args.indexOf("CMD")));
  const relay = (services.retranslator.healthcheck.test as string[]).slice(1);
  let ready = true;
  const paths: string[] = [];
  const server = http.createServer((req, res) => {
    paths.push(req.url ?? "");
    res.writeHead(req.url === "/ready" && ready ? 200 : 503).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = String((server.address() as AddressInfo).port);
  try {
    assert.equal(await runHealthcheck(image, { STATUS_PORT: port }), 0);
    assert.equal(await runHealthcheck(relay, { RETRANSLATOR_METRICS_PORT: port }), 0);
    ready = false;
    assert.equal(await runHealthcheck(image, { STATUS_PORT: port }), 1);
    assert.equal(await runHealthcheck(relay, { RETRANSLATOR_METRICS_PORT: port }), 1);
    assert.deepEqual(paths, ["/ready", "/ready", "/ready", "/ready"]);
  } finally {
    await new Promise((r) => server.close(r));
  }
  assert.equal(await runHealthcheck(image, { STATUS_PORT: port }), 1, "nothing listening");
});

test("the binaries are built from deploy/Dockerfile, once, and run their package.json scripts' commands", () => {
  assert.match(read("deploy/docker-compose.yml"), /^x-app: &app\n/m, "one build definition");
  assert.equal((read("deploy/docker-compose.yml").match(/^\s+build:/gm) ?? []).length, 1, "written once");
  assert.match(String(services.prometheus.image), /^prom\/prometheus:v3\.\d+\.\d+$/);
  for (const name of ["grpc-server", "retranslator", "facade", "bot"]) {
    assert.equal(services[name].image, "logistic-package-api:latest");
    const build = services[name].build;
    assert.ok(build, `${name} is built`);
    assert.equal(resolve(deploy, build.context), resolve(root), `${name}: the build context is the repository root`);
    assert.equal(build.dockerfile, "deploy/Dockerfile");
    assert.ok(existsSync(join(resolve(deploy, build.context), build.dockerfile)));
    assert.ok(Object.keys(build.args ?? {}).includes("COMMIT_HASH"), `${name}: COMMIT_HASH build arg`);
  }
  // node as PID 1 (npm run does not pass SIGTERM on), running the build of exactly the
  // scripts' entry points: `node --import tsx cmd/X/main.ts` in development is
  // `node dist/cmd/X/main.js` in the image (tsconfig.build.json: outDir dist, rootDir .).
  const compiled = (script: string) => {
    const m = /^node --import tsx (cmd\/[a-z-]+\/main)\.ts$/.exec(script);
    assert.ok(m, `a development script runs a cmd/ entry point through tsx: ${script}`);
    return ["node", `dist/${m[1]}.js`];
  };
  const cmd = runtime.find((i) => i.keyword === "CMD");
  assert.ok(cmd, "the image has a CMD");
  assert.deepEqual(
    execForm(cmd.args),
    compiled(pkg.scripts["grpc-server"]!),
    "the image's CMD is the compiled grpc-server",
  );
  for (const name of ["retranslator", "facade", "bot"]) {
    assert.deepEqual(services[name].command, compiled(pkg.scripts[name]!), `${name}: the compiled \`npm run ${name}\``);
  }
  assert.equal(services["grpc-server"].command, undefined, "the grpc-server uses the image's CMD");
  // Time for the graceful shutdown (grpc.shutdownTimeoutMs, retranslator.shutdownTimeoutMs) before SIGKILL.
  const seconds = (s: string) => Number(/^(\d+)s$/.exec(s)?.[1] ?? NaN);
  assert.ok(seconds(services["grpc-server"].stop_grace_period) * 1000 > config.grpc.shutdownTimeoutMs);
  assert.ok(seconds(services.retranslator.stop_grace_period) * 1000 > config.retranslator.shutdownTimeoutMs);
});

// --- Dockerfile -----------------------------------------------------------------

test("the Dockerfile: Node 22 LTS stages, cached install, build, a runtime of production deps and dist/ only, non-root", () => {
  const froms = dockerfile.filter((i) => i.keyword === "FROM");
  assert.ok(froms.length >= 2, "multi-stage");
  // Node 22 is the LTS line in the image; development and CI may still run Node 20 (engines).
  for (const f of froms) assert.match(f.args, /^node:22-bookworm-slim(\s|$)/);
  assert.equal(JSON.parse(read("package.json")).engines.node, ">=20");
  const first = dockerfile.filter((i) => i.stage === 0);
  const install = first.findIndex((i) => i.keyword === "RUN" && /\bnpm ci\b/.test(i.args));
  assert.ok(install >= 0, "stage 1 runs npm ci");
  assert.doesNotMatch(first[install]!.args, /--omit=dev/, "the build stage installs the compiler (a devDependency)");
  const copies = first.slice(0, install).filter((i) => i.keyword === "COPY");
  assert.deepEqual(
    copies.map((c) => c.args.split(/\s+/).slice(0, -1).sort()),
    [["package-lock.json", "package.json"], ["patches"]],
    "only the manifests and the dependency patches (npm ci's postinstall applies them) are copied before npm ci (the install layer stays cached)",
  );
  const build = first.findIndex((i) => i.keyword === "RUN" && /\bnpm run build\b/.test(i.args));
  assert.ok(build > install, "stage 1 compiles after installing");
  assert.ok(
    first.slice(build).some((i) => i.keyword === "RUN" && /\bnpm prune --omit=dev\b/.test(i.args)),
    "devDependencies (typescript, tsx) are pruned before the runtime stage copies node_modules",
  );
  const fromBuild = runtime.filter((i) => i.keyword === "COPY" && /--from=/.test(i.args));
  assert.deepEqual(
    fromBuild.map((i) => i.args.split(/\s+/).filter((w) => !w.startsWith("--"))[0]).sort(),
    ["/app/dist", "/app/node_modules"],
    "the runtime stage takes the compiled dist/ and the production node_modules from the build stage",
  );
  assert.ok(
    !pkg.dependencies.tsx && pkg.devDependencies?.tsx,
    "tsx is a devDependency: nothing runs TypeScript in production",
  );
  assert.ok(!pkg.dependencies.typescript);
  const user = runtime.filter((i) => i.keyword === "USER").at(-1);
  assert.ok(user, "USER set in the runtime stage");
  assert.ok(!["root", "0", "0:0", "root:root"].includes(user.args.trim()), "runs as a non-root user");
  assert.ok(runtime.some((i) => i.keyword === "ARG" && /^COMMIT_HASH\b/.test(i.args)));
  assert.ok(
    runtime.some((i) => i.keyword === "ENV" && /\bCOMMIT_HASH=\$\{?COMMIT_HASH\}?/.test(i.args)),
    "/version reads ENV COMMIT_HASH",
  );
  // Nothing at run time writes into the image (no tsx cache in /tmp, no npm): no VOLUME, no chown'd tree.
  assert.ok(!runtime.some((i) => i.keyword === "VOLUME"), "no writable volume is needed");
  assert.ok(!runtime.some((i) => /--chown/.test(i.args)), "the files stay root-owned, read-only to the process");
});

test("the image: OCI labels, every listening port exposed, a heap limit", () => {
  const labels = new Map<string, string>();
  for (const i of runtime.filter((x) => x.keyword === "LABEL")) {
    for (const m of i.args.matchAll(/([\w.-]+)="([^"]*)"/g)) labels.set(m[1]!, m[2]!);
  }
  assert.equal(labels.get("org.opencontainers.image.title"), JSON.parse(read("package.json")).name);
  assert.ok((labels.get("org.opencontainers.image.description") ?? "").length > 20);
  assert.equal(
    labels.get("org.opencontainers.image.version"),
    JSON.parse(read("package.json")).version,
    "the version of package.json",
  );
  assert.match(
    labels.get("org.opencontainers.image.revision") ?? "",
    /^\$\{?COMMIT_HASH\}?$/,
    "the commit the image is built from",
  );

  const exposed = runtime
    .filter((i) => i.keyword === "EXPOSE")
    .flatMap((i) => i.args.split(/\s+/))
    .map((p) => Number(p.replace(/\/tcp$/, "")))
    .sort();
  const listening = [
    config.grpc.port,
    config.gateway.port,
    config.status.port,
    config.metrics.port,
    config.retranslator.metricsPort,
    config.facade.metricsPort,
    config.bot.metricsPort,
  ].sort();
  assert.deepEqual(exposed, listening, "every port a binary of the image listens on (config.yml), and no other");

  // One limit for every binary of the image, sized from the bench (the Dockerfile comment says how).
  const env = runtime
    .filter((i) => i.keyword === "ENV")
    .map((i) => i.args)
    .join(" ");
  const options = /NODE_OPTIONS="([^"]*)"/.exec(env)?.[1] ?? "";
  const heap = Number(/--max-old-space-size=(\d+)/.exec(options)?.[1]);
  assert.ok(heap >= 128 && heap <= 512, `a heap limit in MiB (${options})`);
  assert.match(read("deploy/Dockerfile"), /^# .*measured/im, "the limit's comment gives the measured figures");
});

/** Runtime-stage COPY sources from the build context (not --from). */
const copied = runtime
  .filter((i) => i.keyword === "COPY" && !/--from=/.test(i.args))
  .flatMap((i) => {
    const words = i.args.split(/\s+/).filter((w) => !w.startsWith("--"));
    return words.slice(0, -1).map((w) => w.replace(/\/$/, ""));
  });

/** Relative and bare imports of one TypeScript file (type-only imports are erased at run time). */
function importsOf(file: string): { relative: string[]; bare: string[]; dynamicBare: string[] } {
  const source = readFileSync(file, "utf8");
  const specs: string[] = [];
  const dynamic: string[] = [];
  const statement = /(?:^|[;\n])\s*(import|export)\s+(type\s+)?([^"';]*?\bfrom\s+)?["']([^"']+)["']/g;
  for (const m of source.matchAll(statement)) if (m[2] === undefined) specs.push(m[4]!);
  // Not in a type position (`typeof import("x")`), which compiles to nothing.
  for (const m of source.matchAll(/(\btypeof\s+)?\bimport\(\s*["']([^"']+)["']\s*\)/g)) {
    if (m[1] === undefined) dynamic.push(m[2]!);
  }
  return {
    relative: [...specs, ...dynamic].filter((s) => s.startsWith(".")),
    bare: specs.filter((s) => !s.startsWith(".")),
    dynamicBare: dynamic.filter((s) => !s.startsWith(".")),
  };
}

/**
 * Development dependencies a binary may load at run time only when configured to, each loaded
 * by a dynamic import() that stops the start with a ConfigError where it is missing (the image).
 */
const optionalAtRunTime = new Map([
  ["@platformatic/kafka", "kafka.producerClient platformatic, for the bench (retranslator/sender/produce-client.ts)"],
]);

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

/** Build-stage COPY sources from the build context. */
const copiedToBuild = dockerfile
  .filter((i) => i.stage === 0 && i.keyword === "COPY" && !/--from=/.test(i.args))
  .flatMap((i) => {
    const words = i.args.split(/\s+/).filter((w) => !w.startsWith("--"));
    return words.slice(0, -1).map((w) => w.replace(/\/$/, ""));
  });

test("the image holds everything the binaries load at run time, and only runtime dependencies are needed", () => {
  // Read at run time by path: package.json (/version), api/openapi.json (the gateway), config.yml (defaults).
  for (const needed of ["api", "config.yml", "package.json"]) {
    assert.ok(copied.includes(needed), `the runtime stage copies ${needed}`);
    assert.ok(existsSync(join(root, needed)));
  }
  for (const sources of ["cmd", "internal", "pkg", "db"])
    assert.ok(!copied.includes(sources), `no ${sources}/ sources at run time: dist/ has them compiled`);
  const buildConfig = JSON.parse(read("tsconfig.build.json").replace(/^\s*\/\/.*$/gm, "")) as {
    compilerOptions: { outDir: string; rootDir: string };
    include: string[];
  };
  assert.equal(buildConfig.compilerOptions.outDir, "dist");
  assert.equal(buildConfig.compilerOptions.rootDir, ".", "dist/ mirrors the tree: dist/cmd/<binary>/main.js");
  for (const needed of ["tsconfig.json", "tsconfig.build.json"])
    assert.ok(copiedToBuild.includes(needed), `the build stage copies ${needed}`);
  // Every module reachable from the entry points (and every migration, which knex loads by path).
  const entries = ["grpc-server", "retranslator", "admin", "migrate"].map((b) => join(root, "cmd", b, "main.ts"));
  const migrations = walk(join(root, "db")).filter((f) => f.endsWith(".ts"));
  const seen = new Set<string>();
  const queue = [...entries.filter((e) => existsSync(e)), ...migrations];
  const packages = new Set<string>();
  const optionalSeen = new Set<string>();
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const { relative: rel, bare, dynamicBare } = importsOf(file);
    for (const spec of rel) {
      let target = resolve(dirname(file), spec);
      if (!existsSync(target) && target.endsWith(".js")) target = target.replace(/\.js$/, ".ts");
      assert.ok(existsSync(target), `${relative(root, file)} imports ${spec}, which exists`);
      queue.push(target);
    }
    for (const spec of [...bare, ...dynamicBare]) {
      if (spec.startsWith("node:") || builtinModules.includes(spec.split("/")[0]!)) continue;
      const name = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!;
      if (optionalAtRunTime.has(name) && !bare.includes(spec)) optionalSeen.add(name);
      else packages.add(name);
    }
  }
  assert.ok(seen.size > 20, `the import walk found the sources (${seen.size} files)`);
  for (const file of seen) {
    const top = relative(root, file).split("/")[0]!;
    assert.ok(
      copiedToBuild.includes(top),
      `${relative(root, file)} is loaded at run time: the build stage must copy ${top}/`,
    );
    assert.ok(
      buildConfig.include.includes(top),
      `${relative(root, file)} is loaded at run time: tsconfig.build.json must compile ${top}/`,
    );
  }
  for (const name of packages) {
    assert.ok(
      pkg.dependencies[name],
      `${name} is imported at run time: it must be in dependencies (the image omits devDependencies)`,
    );
  }
  // The optional ones: only ever imported dynamically, and not shipped.
  assert.deepEqual([...optionalSeen].sort(), [...optionalAtRunTime.keys()].sort());
  for (const name of optionalSeen) {
    assert.ok(pkg.devDependencies?.[name] && !pkg.dependencies[name], `${name}: a devDependency only`);
  }
});

test(".dockerignore keeps the build context small without dropping what the image copies", () => {
  const patterns = read(".dockerignore")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  for (const p of ["node_modules", ".git", "tools/kafka-mock/bin", "bench/results", "*.cpuprofile"]) {
    assert.ok(patterns.includes(p), `.dockerignore has ${p}`);
  }
  const sources = [...copied, "package-lock.json"];
  for (const source of sources) {
    for (const p of patterns.filter((x) => !x.startsWith("!"))) {
      const glob = p
        .replace(/[.+^${}()|[\]\\]/g, "\\$&")
        .replace(/\*\*\//g, "\u0000")
        .replace(/\*/g, "[^/]*")
        // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is the placeholder put in for "**" above.
        .replace(/\u0000/g, "(.*/)?");
      const re = new RegExp(`^${glob}(/|$)`);
      assert.ok(!re.test(source), `.dockerignore pattern ${p} would drop ${source}, which the Dockerfile copies`);
    }
  }
});

// --- Prometheus and Grafana -------------------------------------------------------

test("Prometheus scrapes every binary's metrics port every 5 s", () => {
  const prom = yamlFile("deploy/prometheus/prometheus.yml");
  const jobs = new Map<string, any>((prom.scrape_configs as any[]).map((j) => [j.job_name, j]));
  assert.deepEqual([...jobs.keys()].sort(), ["facade", "grpc-server", "retranslator"]);
  const targets = (job: any) => (job.static_configs as any[]).flatMap((s) => s.targets as string[]);
  assert.deepEqual(targets(jobs.get("grpc-server")), [`grpc-server:${config.metrics.port}`]);
  assert.deepEqual(targets(jobs.get("retranslator")), [`retranslator:${config.retranslator.metricsPort}`]);
  assert.deepEqual(targets(jobs.get("facade")), [`facade:${config.facade.metricsPort}`]);
  for (const job of jobs.values()) {
    assert.equal(job.scrape_interval ?? prom.global?.scrape_interval, "5s");
    assert.equal(job.metrics_path ?? "/metrics", "/metrics");
  }
  // compose mounts this file where the image reads it.
  const mount = (services.prometheus.volumes as string[]).find((v) => v.startsWith("./prometheus/prometheus.yml:"));
  assert.ok(mount, "prometheus.yml is mounted");
  const target = mount.split(":")[1];
  const flag = (services.prometheus.command as string[] | undefined)?.find((c) => c.startsWith("--config.file="));
  assert.equal(target, flag ? flag.slice("--config.file=".length) : "/etc/prometheus/prometheus.yml");
  assert.ok(portsOf(services.prometheus).some((p) => p.target === 9090));
});

test("Grafana provisioning: the Prometheus datasource and the dashboard directory that compose mounts", () => {
  const grafana = services.grafana;
  const volumes = grafana.volumes as string[];
  const mountOf = (source: string) => {
    const v = volumes.find((x) => x.split(":")[0] === source);
    assert.ok(v, `grafana mounts ${source}`);
    assert.ok(existsSync(resolve(deploy, source)), `${source} exists next to docker-compose.yml`);
    return v.split(":")[1]!;
  };
  assert.equal(mountOf("./grafana/provisioning"), "/etc/grafana/provisioning");
  const dashboardsDir = mountOf("./grafana/dashboards");

  const datasources = yamlFile("deploy/grafana/provisioning/datasources/prometheus.yml");
  assert.equal(datasources.apiVersion, 1);
  const ds = (datasources.datasources as any[]).find((d) => d.type === "prometheus");
  assert.ok(ds, "a prometheus datasource");
  assert.equal(ds.uid, "prometheus");
  assert.equal(ds.isDefault, true);
  assert.equal(ds.url, "http://prometheus:9090");

  const providers = yamlFile("deploy/grafana/provisioning/dashboards/dashboards.yml");
  assert.equal(providers.apiVersion, 1);
  const provider = (providers.providers as any[])[0];
  assert.equal(provider.type, "file");
  assert.equal(provider.options.path, dashboardsDir, "the provider reads the mounted dashboards directory");
  assert.ok(portsOf(grafana).some((p) => p.target === 3000));

  const dashboard = JSON.parse(read("deploy/grafana/dashboards/logistic-package-api.json"));
  assert.equal(dashboard.schemaVersion, 39);
  assert.equal(typeof dashboard.uid, "string");
  const panels = (dashboard.panels as any[]).filter((p) => p.type !== "row");
  assert.ok(panels.length >= 12, "a panel for each metric group");
  const ids = (dashboard.panels as any[]).map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, "panel ids are unique");
  // The datasource is a variable (another Grafana's Prometheus can be picked), defaulting to
  // the provisioned one.
  const variable = (dashboard.templating.list as any[]).find((v) => v.name === "datasource");
  assert.ok(variable, "a datasource variable");
  assert.equal(variable.type, "datasource");
  assert.equal(variable.query, "prometheus");
  assert.equal(variable.current.value, ds.uid, "defaulting to the provisioned datasource");
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a Grafana variable reference, kept literally.
  const dsRef = { type: "prometheus", uid: "${datasource}" };
  for (const panel of panels) {
    assert.ok(["timeseries", "stat"].includes(panel.type), `${panel.title}: ${panel.type}`);
    assert.deepEqual(panel.datasource, dsRef, `${panel.title} uses the datasource variable`);
    assert.ok(panel.targets.length > 0, `${panel.title} has queries`);
    for (const t of panel.targets) {
      assert.match(t.expr, /logistic_package_api_|nodejs_|process_/, `${panel.title}: ${t.expr}`);
      assert.deepEqual(t.datasource ?? dsRef, dsRef);
    }
    for (const k of ["x", "y", "w", "h"])
      assert.equal(typeof panel.gridPos[k], "number", `${panel.title} gridPos.${k}`);
  }
  const home = envOf(grafana).GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH;
  assert.equal(home, `${dashboardsDir}/logistic-package-api.json`, "Grafana opens on the service's dashboard");
});

test("Makefile targets build the image and start the compose stack from these files", () => {
  const makefile = read("Makefile");
  assert.match(makefile, /^\.PHONY:.*\bdocker-build\b/m);
  assert.match(makefile, /^\.PHONY:.*\bcompose-up\b/m);
  assert.match(
    makefile,
    /^docker-build:\n\tdocker build -f deploy\/Dockerfile --build-arg COMMIT_HASH=\$\$\(git rev-parse HEAD\) -t logistic-package-api:latest \.$/m,
  );
  assert.match(makefile, /^compose-up:\n\tdocker compose -f deploy\/docker-compose\.yml up --build$/m);
  assert.equal(
    services["grpc-server"].image,
    "logistic-package-api:latest",
    "compose tags the image as make docker-build does",
  );
});

test("the bot runs only on request (compose profile) and only with a token", () => {
  const bot = services.bot;
  assert.deepEqual(bot.profiles, ["bot"]);
  assert.match(String(bot.environment.TELEGRAM_BOT_TOKEN), /^\$\{TELEGRAM_BOT_TOKEN:\?/);
  assert.equal(bot.environment.BOT_GRPC_ADDRESS, `grpc-server:${config.grpc.port}`);
  assert.equal(services.facade.environment.KAFKA_BROKERS, services.retranslator.environment.KAFKA_BROKERS);
});
