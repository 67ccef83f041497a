// The Kubernetes base (deploy/k8s/) checked as files: nothing here needs kubectl, kustomize
// or a cluster. Every manifest is validated against the Kubernetes OpenAPI schemas shipped by
// kubernetes-models, then against what the binaries need: probes on the ports they serve,
// a hardened pod, resources, Secret and ConfigMap keys that exist, a configuration config.ts
// accepts, one image, a migration Job and Deployments that do not migrate.
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Deployment } from "kubernetes-models/apps/v1";
import { Job } from "kubernetes-models/batch/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ConfigMap, Secret, Service, ServiceAccount } from "kubernetes-models/v1";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { AuthConfigError, TokenTable } from "../internal/api/auth.js";
import { type Config, envOverrides, loadConfig } from "../internal/config/config.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const dir = join(root, "deploy", "k8s");
const IMAGE = "logistic-package-api";

/** The model class of each kind the base may use; any other kind is an error (ServiceMonitor is checked apart). */
const models: Record<string, { new (data: any): { validate(): void } }> = {
  "apps/v1 Deployment": Deployment,
  "batch/v1 Job": Job,
  "policy/v1 PodDisruptionBudget": PodDisruptionBudget,
  "v1 ConfigMap": ConfigMap,
  "v1 Secret": Secret,
  "v1 Service": Service,
  "v1 ServiceAccount": ServiceAccount,
};

interface Manifest {
  file: string;
  doc: any;
}

const files = readdirSync(dir)
  .filter((f) => /\.ya?ml$/.test(f) && f !== "kustomization.yaml")
  .sort();
const kustomization = parseYaml(readFileSync(join(dir, "kustomization.yaml"), "utf8")) as any;
const manifests: Manifest[] = files.flatMap((file) =>
  parseAllDocuments(readFileSync(join(dir, file), "utf8")).map((d) => {
    assert.deepEqual(d.errors, [], `${file} parses as YAML`);
    return { file, doc: d.toJS() };
  }),
);
const ofKind = (kind: string) => manifests.filter((m) => m.doc?.kind === kind).map((m) => m.doc);
const deployments = ofKind("Deployment");
const jobs = ofKind("Job");
const services = ofKind("Service");
const secrets = new Map<string, any>(ofKind("Secret").map((s) => [s.metadata.name, s]));
const configMaps = new Map<string, any>(ofKind("ConfigMap").map((c) => [c.metadata.name, c]));
const deployment = (component: string) => {
  const d = deployments.find((x) => x.metadata.labels?.["app.kubernetes.io/component"] === component);
  assert.ok(d, `a Deployment of ${component}`);
  return d;
};
/** Every pod template of the base (Deployments and the Job), with its workload's name. */
const workloads = [...deployments, ...jobs].map((w) => ({
  name: w.metadata.name as string,
  kind: w.kind as string,
  pod: w.spec.template,
}));
const containers = workloads.flatMap((w) => (w.pod.spec.containers as any[]).map((c) => ({ workload: w, c })));

/** A Secret's or ConfigMap's value by key (stringData or base64 data). */
function keyValue(source: any, key: string): string | undefined {
  if (source?.stringData?.[key] !== undefined) return String(source.stringData[key]);
  if (source?.data?.[key] !== undefined) {
    return source.kind === "Secret"
      ? Buffer.from(String(source.data[key]), "base64").toString("utf8")
      : String(source.data[key]);
  }
  return undefined;
}

/** A container's environment as config.ts would see it: literals, and Secret/ConfigMap values. */
function envOf(c: any): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = String(e.value);
    const s = e.valueFrom?.secretKeyRef;
    if (s) env[e.name] = keyValue(secrets.get(s.name), s.key) ?? "";
    const m = e.valueFrom?.configMapKeyRef;
    if (m) env[e.name] = keyValue(configMaps.get(m.name), m.key) ?? "";
  }
  return env;
}

/** The files a pod's volumes put at each mount path of a container: path -> content. */
function mountedFiles(pod: any, c: any): Map<string, string> {
  const files = new Map<string, string>();
  for (const mount of c.volumeMounts ?? []) {
    const volume = (pod.spec.volumes as any[]).find((v) => v.name === mount.name);
    assert.ok(volume, `${c.name}: volume ${mount.name} is defined`);
    const source = volume.secret
      ? secrets.get(volume.secret.secretName)
      : volume.configMap
        ? configMaps.get(volume.configMap.name)
        : undefined;
    if (source === undefined) continue;
    const keys: { key: string; path: string }[] =
      (volume.secret ?? volume.configMap).items ??
      Object.keys({ ...source.data, ...source.stringData }).map((k) => ({ key: k, path: k }));
    for (const { key, path } of keys) files.set(`${mount.mountPath}/${path}`, keyValue(source, key) ?? "");
  }
  return files;
}

const temp = mkdtempSync(join(tmpdir(), "lpa-k8s-"));
after(() => rmSync(temp, { recursive: true, force: true }));

/** config.ts's view of a container: its CONFIG_PATH file (from the ConfigMap) and its environment. */
function configOf(pod: any, c: any): Readonly<Config> {
  const env = envOf(c);
  const path = env.CONFIG_PATH;
  assert.ok(path, `${c.name}: CONFIG_PATH is set`);
  const content = mountedFiles(pod, c).get(path);
  assert.ok(content !== undefined, `${c.name}: CONFIG_PATH ${path} is a mounted ConfigMap file`);
  const file = join(temp, `${c.name}-${Math.random().toString(36).slice(2)}.yml`);
  writeFileSync(file, content);
  return loadConfig({ path: file, env });
}

/** Kubernetes quantities in bytes (memory) or cores (cpu). */
function quantity(q: string | number): number {
  const m = /^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|k|M|G)?$/.exec(String(q));
  assert.ok(m, `quantity ${q}`);
  const units: Record<string, number> = { m: 1e-3, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, k: 1e3, M: 1e6, G: 1e9 };
  return Number(m[1]) * (m[2] === undefined ? 1 : units[m[2]]!);
}

/** The container port a probe or Service names (by name or number). */
function containerPort(c: any, port: string | number): number | undefined {
  const p = (c.ports ?? []).find((x: any) => x.name === port || x.containerPort === port);
  return p?.containerPort;
}

/** The image's command for a binary: deploy/Dockerfile's CMD (the grpc-server's) with the binary swapped in. */
function imageCommand(binary: string): string[] {
  const lines = readFileSync(join(root, "deploy", "Dockerfile"), "utf8")
    .replace(/\\\n/g, " ")
    .split("\n");
  const cmd = lines.filter((l) => /^CMD\s+\[/.test(l)).at(-1);
  assert.ok(cmd, "deploy/Dockerfile has an exec-form CMD");
  const words = JSON.parse(cmd.slice(cmd.indexOf("["))) as string[];
  assert.ok(
    words.some((w) => w.includes("grpc-server")),
    "the image's CMD runs the grpc-server",
  );
  return words.map((w) => w.replace("grpc-server", binary));
}

// --- the schemas ----------------------------------------------------------------

test("kustomization.yaml lists exactly the manifests of deploy/k8s, and names the one image", () => {
  assert.equal(kustomization.kind, "Kustomization");
  assert.deepEqual([...(kustomization.resources as string[])].sort(), files);
  assert.deepEqual(
    (kustomization.images as any[]).map((i) => i.name),
    [IMAGE],
  );
});

test("every manifest is valid against the Kubernetes schemas of kubernetes-models", () => {
  assert.ok(manifests.length >= 15, `${manifests.length} manifests`);
  const problems: string[] = [];
  for (const { file, doc } of manifests) {
    const key = `${doc.apiVersion} ${doc.kind}`;
    if (doc.apiVersion === "monitoring.coreos.com/v1") continue; // CRDs (ServiceMonitor, PrometheusRule): checked below
    const Model = models[key];
    if (Model === undefined) {
      problems.push(`${file}: ${key} is not a kind this test knows`);
      continue;
    }
    try {
      new Model(doc).validate();
    } catch (err) {
      problems.push(`${file} ${key} ${doc.metadata?.name}: ${(err as Error).message}`);
    }
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(doc.metadata?.name ?? "") || doc.metadata.name.length > 63) {
      problems.push(`${file}: ${key} name ${doc.metadata?.name} is not a DNS label`);
    }
  }
  assert.deepEqual(problems, []);
  const names = manifests.map((m) => `${m.doc.kind}/${m.doc.metadata.name}`);
  assert.equal(new Set(names).size, names.length, "no two manifests of a kind share a name");
});

test("the schema validation rejects a broken manifest (it really runs)", () => {
  const broken = structuredClone(deployment("grpc-server"));
  broken.spec.template.spec.containers[0].ports[0].containerPort = "eight-oh-eight-two";
  assert.throws(() => new Deployment(broken).validate(), /containerPort/);
  const noSelector = structuredClone(deployment("retranslator"));
  delete noSelector.spec.selector;
  assert.throws(() => new Deployment(noSelector).validate(), /selector/);
});

test("the ServiceMonitor scrapes the metrics port of every Service, with the compose job names", () => {
  const monitors = ofKind("ServiceMonitor");
  assert.equal(monitors.length, 1);
  const sm = monitors[0];
  assert.equal(sm.apiVersion, "monitoring.coreos.com/v1");
  assert.deepEqual(
    Object.keys(sm.spec).sort(),
    ["endpoints", "jobLabel", "selector"],
    "only fields the CRD knows, as used here",
  );
  const selector = sm.spec.selector.matchLabels as Record<string, string>;
  const selected = services.filter((s) => Object.entries(selector).every(([k, v]) => s.metadata.labels?.[k] === v));
  assert.deepEqual(
    selected.map((s) => s.metadata.name).sort(),
    services.map((s) => s.metadata.name).sort(),
    "every Service is selected",
  );
  assert.equal(sm.spec.endpoints.length, 1);
  const endpoint = sm.spec.endpoints[0];
  assert.equal(endpoint.port, "metrics");
  assert.equal(endpoint.path, "/metrics");
  assert.match(endpoint.interval, /^\d+s$/);
  assert.ok(quantity(endpoint.scrapeTimeout.replace(/s$/, "")) < quantity(endpoint.interval.replace(/s$/, "")));
  for (const s of selected)
    assert.ok(
      (s.spec.ports as any[]).some((p) => p.name === "metrics"),
      `${s.metadata.name} has a metrics port`,
    );
  // The job label comes from this Service label: the same job names as the compose Prometheus,
  // so deploy/prometheus/alerts.yml applies to both. Compose runs the bot only on request and
  // does not scrape it; here it is scraped like the others.
  const jobs = selected.map((s) => s.metadata.labels[sm.spec.jobLabel]).sort();
  const prom = parseYaml(readFileSync(join(root, "deploy", "prometheus", "prometheus.yml"), "utf8")) as any;
  assert.deepEqual(jobs, [...(prom.scrape_configs as any[]).map((j) => j.job_name), "bot"].sort());
});

test("the PrometheusRule carries exactly the alert rules of deploy/prometheus/alerts.yml", () => {
  const rules = ofKind("PrometheusRule");
  assert.equal(rules.length, 1);
  assert.equal(rules[0].apiVersion, "monitoring.coreos.com/v1");
  assert.deepEqual(Object.keys(rules[0].spec), ["groups"]);
  const alerts = parseYaml(readFileSync(join(root, "deploy", "prometheus", "alerts.yml"), "utf8")) as {
    groups: unknown[];
  };
  assert.deepEqual(
    rules[0].spec.groups,
    alerts.groups,
    "the same groups, rules, labels and annotations (copy alerts.yml's groups)",
  );
  // Selected by the same labels as the ServiceMonitor, so one Prometheus picks up both.
  assert.deepEqual(rules[0].metadata.labels, ofKind("ServiceMonitor")[0].metadata.labels);
});

// --- what the binaries need -------------------------------------------------------

test("the Deployments: grpc-server and retranslator 2 replicas, facade 1, bot 1 recreated", () => {
  assert.deepEqual(
    deployments
      .map((d) => [
        d.metadata.labels["app.kubernetes.io/component"],
        d.spec.replicas,
        d.spec.strategy?.type ?? "RollingUpdate",
      ])
      .sort(),
    [
      ["bot", 1, "Recreate"],
      ["facade", 1, "RollingUpdate"],
      ["grpc-server", 2, "RollingUpdate"],
      ["retranslator", 2, "RollingUpdate"],
    ],
  );
  for (const d of deployments) {
    const labels = d.spec.template.metadata.labels;
    for (const [k, v] of Object.entries(d.spec.selector.matchLabels))
      assert.equal(labels[k], v, `${d.metadata.name}: its pods carry its selector`);
  }
});

test("every binary runs the image's command for it, and every workload uses the same image", () => {
  const binaryOf = (w: { kind: string; pod: any }, c: any) => (w.kind === "Job" ? "migrate" : c.name);
  for (const { workload, c } of containers) {
    assert.equal(c.image, IMAGE, `${workload.name}/${c.name} runs the one image (kustomization.yaml pins its tag)`);
    assert.deepEqual(
      c.command,
      imageCommand(binaryOf(workload, c)),
      `${workload.name}/${c.name} runs cmd/${binaryOf(workload, c)}`,
    );
  }
  assert.deepEqual(containers.map(({ workload, c }) => binaryOf(workload, c)).sort(), [
    "bot",
    "facade",
    "grpc-server",
    "migrate",
    "retranslator",
  ]);
});

test("probes: /live and /ready on the port where each binary serves them", () => {
  for (const { workload, c } of containers) {
    if (workload.kind === "Job") continue;
    const config = configOf(workload.pod, c);
    // Where each binary serves its probes (the bot has /live only, and gets no traffic).
    const served: Record<string, { port: number; ready: boolean }> = {
      "grpc-server": { port: config.status.port, ready: true },
      retranslator: { port: config.retranslator.metricsPort, ready: true },
      facade: { port: config.facade.metricsPort, ready: true },
      bot: { port: config.bot.metricsPort, ready: false },
    };
    const serves = served[c.name];
    assert.ok(serves !== undefined, `${c.name}: a known binary`);
    const probes: [string, string][] = [
      ["livenessProbe", "/live"],
      ["startupProbe", "/live"],
    ];
    if (serves.ready) probes.push(["readinessProbe", "/ready"]);
    else assert.equal(c.readinessProbe, undefined, `${c.name} serves no /ready`);
    for (const [probe, path] of probes) {
      const get = c[probe]?.httpGet;
      assert.ok(get, `${c.name} has a ${probe}`);
      assert.equal(get.path, path, `${c.name} ${probe}`);
      assert.equal(
        containerPort(c, get.port),
        serves.port,
        `${c.name} ${probe} asks port ${get.port}, which must be the exposed ${serves.port}`,
      );
    }
    // Liveness must not depend on the database (a database outage would restart every pod).
    assert.equal(c.livenessProbe.httpGet.path, "/live");
  }
  // The grpc-server exposes every listener it opens, under config.yml's ports.
  const api = deployment("grpc-server");
  const c = api.spec.template.spec.containers[0];
  const config = configOf(api.spec.template, c);
  assert.deepEqual(Object.fromEntries((c.ports as any[]).map((p) => [p.name, p.containerPort])), {
    grpc: config.grpc.port,
    gateway: config.gateway.port,
    status: config.status.port,
    metrics: config.metrics.port,
  });
  assert.equal(config.grpc.host, "0.0.0.0", "listeners reachable from the Service");
});

test("every pod runs as non-root on a read-only root filesystem, without privileges or writable volumes", () => {
  for (const w of workloads) {
    const pod = w.pod.spec;
    assert.deepEqual(
      (pod.volumes ?? []).filter((v: any) => v.emptyDir || v.hostPath).map((v: any) => v.name),
      [],
      `${w.name}: no writable or host volume`,
    );
    assert.equal(pod.securityContext?.runAsNonRoot, true, `${w.name}: runAsNonRoot`);
    // The image's user is named (`node`): the kubelet needs a number to verify runAsNonRoot.
    assert.ok(
      Number.isInteger(pod.securityContext.runAsUser) && pod.securityContext.runAsUser > 0,
      `${w.name}: numeric non-root runAsUser`,
    );
    assert.equal(pod.securityContext.seccompProfile?.type, "RuntimeDefault", `${w.name}: seccomp`);
    assert.equal(pod.automountServiceAccountToken, false, `${w.name}: no API token in the pod`);
    for (const c of pod.containers as any[]) {
      const sc = c.securityContext ?? {};
      assert.equal(sc.readOnlyRootFilesystem, true, `${w.name}/${c.name}: readOnlyRootFilesystem`);
      assert.equal(sc.allowPrivilegeEscalation, false, `${w.name}/${c.name}: allowPrivilegeEscalation`);
      assert.equal(sc.runAsNonRoot, true, `${w.name}/${c.name}: runAsNonRoot`);
      assert.deepEqual(sc.capabilities?.drop, ["ALL"], `${w.name}/${c.name}: drops every capability`);
      assert.equal(sc.capabilities?.add, undefined);
      assert.notEqual(sc.privileged, true);
      // The compiled binaries write nothing: no writable volume at all (no /tmp either).
      for (const m of c.volumeMounts ?? [])
        assert.equal(m.readOnly, true, `${w.name}/${c.name}: ${m.mountPath} read-only`);
    }
  }
});

test("resources: CPU and memory requested, memory limited above the request and the V8 heap cap", () => {
  for (const { workload, c } of containers) {
    const r = c.resources ?? {};
    const where = `${workload.name}/${c.name}`;
    assert.ok(r.requests?.cpu !== undefined && r.requests?.memory !== undefined, `${where}: requests cpu and memory`);
    assert.ok(r.limits?.memory !== undefined, `${where}: limits memory`);
    const limit = quantity(r.limits.memory);
    assert.ok(quantity(r.requests.memory) <= limit, `${where}: request <= limit`);
    const heap = /--max-old-space-size=(\d+)/.exec(envOf(c).NODE_OPTIONS ?? "");
    assert.ok(heap, `${where}: NODE_OPTIONS caps the V8 heap (sized to the container, not the node)`);
    assert.ok(
      Number(heap[1]) * 1024 ** 2 <= limit * 0.6,
      `${where}: heap cap ${heap[1]} MiB leaves room below the ${r.limits.memory} limit`,
    );
  }
  // The retranslator's limit holds the peak the bench measured while draining 1,000,000 events.
  const bench = JSON.parse(readFileSync(join(root, "bench", "results", "latest-full.json"), "utf8"));
  const peakMiB = Number(bench.results.memory.peakRssMiBMax);
  assert.ok(peakMiB > 0, "the bench recorded the retranslator's peak");
  const relay = deployment("retranslator").spec.template.spec.containers[0];
  assert.ok(
    quantity(relay.resources.limits.memory) >= peakMiB * 1024 ** 2 * 1.2,
    `limit ${relay.resources.limits.memory} vs peak ${peakMiB} MiB`,
  );
});

test("every Secret and ConfigMap key the workloads read is defined by the base", () => {
  const problems: string[] = [];
  const check = (
    where: string,
    kind: "Secret" | "ConfigMap",
    name: string,
    key: string | undefined,
    optional: unknown,
  ) => {
    if (optional === true)
      problems.push(`${where}: ${kind} ${name} is optional (a missing one would start the binary without it)`);
    const source = (kind === "Secret" ? secrets : configMaps).get(name);
    if (source === undefined) problems.push(`${where}: ${kind} ${name} is not in the base`);
    else if (key !== undefined && keyValue(source, key) === undefined)
      problems.push(`${where}: ${kind} ${name} has no key ${key}`);
  };
  for (const { workload, c } of containers) {
    const where = `${workload.name}/${c.name}`;
    for (const e of c.env ?? []) {
      const s = e.valueFrom?.secretKeyRef;
      if (s) check(`${where} env ${e.name}`, "Secret", s.name, s.key, s.optional);
      const m = e.valueFrom?.configMapKeyRef;
      if (m) check(`${where} env ${e.name}`, "ConfigMap", m.name, m.key, m.optional);
    }
    for (const f of c.envFrom ?? []) {
      if (f.secretRef) check(`${where} envFrom`, "Secret", f.secretRef.name, undefined, f.secretRef.optional);
      if (f.configMapRef)
        check(`${where} envFrom`, "ConfigMap", f.configMapRef.name, undefined, f.configMapRef.optional);
    }
  }
  for (const w of workloads) {
    for (const v of w.pod.spec.volumes ?? []) {
      const src = v.secret ?? v.configMap;
      if (!src) continue;
      const kind = v.secret ? "Secret" : "ConfigMap";
      const name = v.secret ? v.secret.secretName : v.configMap.name;
      if (!src.items) check(`${w.name} volume ${v.name}`, kind, name, undefined, src.optional);
      for (const item of src.items ?? []) check(`${w.name} volume ${v.name}`, kind, name, item.key, src.optional);
    }
  }
  assert.deepEqual(problems, []);
  // The secrets the issue names come from Secrets, never from literals or the ConfigMap.
  const fromSecret = new Set(
    containers.flatMap(({ c }) => (c.env ?? []).filter((e: any) => e.valueFrom?.secretKeyRef).map((e: any) => e.name)),
  );
  for (const name of [
    "DATABASE_URL",
    "DATABASE_MIGRATION_URL",
    "FACADE_DATABASE_URL",
    "FACADE_DATABASE_MIGRATION_URL",
    "KAFKA_SASL_PASSWORD",
    "TELEGRAM_BOT_TOKEN",
    "BOT_API_TOKEN",
  ]) {
    assert.ok(fromSecret.has(name), `${name} comes from a Secret`);
  }
  for (const cm of configMaps.values())
    assert.doesNotMatch(JSON.stringify(cm.data), /password|CHANGE-ME|token:/i, "no secret in the ConfigMap");
});

test("each container's config file and environment make a configuration config.ts accepts, with every file it names mounted", () => {
  const accepted = new Set([...Object.keys(envOverrides), "CONFIG_PATH", "NODE_OPTIONS"]);
  for (const { workload, c } of containers) {
    const where = `${workload.name}/${c.name}`;
    const env = envOf(c);
    for (const name of Object.keys(env)) assert.ok(accepted.has(name), `${where}: ${name} is read by the binaries`);
    configOf(workload.pod, c); // throws ConfigError naming the key
    // Every file an environment variable points at is put there by a volume.
    const files = mountedFiles(workload.pod, c);
    for (const [name, value] of Object.entries(env)) {
      if (/_FILE$|^CONFIG_PATH$/.test(name))
        assert.ok(files.has(value), `${where}: ${name}=${value} is a mounted file`);
    }
  }
  const api = deployment("grpc-server");
  const config = configOf(api.spec.template, api.spec.template.spec.containers[0]);
  assert.notEqual(config.tls.certFile, "", "the API speaks TLS");
  assert.notEqual(config.auth.tokensFile, "", "the API requires tokens");
  const bot = deployment("bot");
  const botConfig = configOf(bot.spec.template, bot.spec.template.spec.containers[0]);
  const [host, port] = botConfig.bot.grpcAddress.split(":");
  const apiService = services.find((s) => s.metadata.name === host);
  assert.ok(apiService, `the bot calls the Service ${host}`);
  assert.ok(
    (apiService.spec.ports as any[]).some((p) => p.port === Number(port) && p.name === "grpc"),
    "on its gRPC port",
  );
  assert.equal(botConfig.bot.apiTls, true, "over TLS, as the API speaks it");
  // The retranslator and the facade reach Kafka with the credentials of the Kafka Secret.
  for (const name of ["retranslator", "facade"]) {
    const d = deployment(name);
    const k = configOf(d.spec.template, d.spec.template.spec.containers[0]).kafka;
    assert.ok(k.ssl && k.saslMechanism !== "", `${name}: TLS and SASL to the brokers`);
    assert.deepEqual(k.brokers, config.kafka.brokers, `${name}: the same brokers`);
  }
});

test("the migration Job migrates the API database; the Deployments do not, except the facade its own", () => {
  assert.equal(jobs.length, 1);
  const job = jobs[0];
  const c = job.spec.template.spec.containers[0];
  assert.deepEqual(c.command, imageCommand("migrate"), "the Job runs `npm run migrate`'s binary");
  const env = envOf(c);
  assert.ok(env.DATABASE_MIGRATION_URL && env.DATABASE_URL, "as the schema owner, on the API database");
  assert.notEqual(env.DATABASE_MIGRATION_URL, env.DATABASE_URL, "the owner's URL, not the app role's");
  assert.ok(["Never", "OnFailure"].includes(job.spec.template.spec.restartPolicy));
  assert.ok(job.spec.backoffLimit >= 1, "retried while the database starts");
  for (const name of ["grpc-server", "retranslator", "bot"]) {
    const d = deployment(name);
    const dc = d.spec.template.spec.containers[0];
    assert.equal(configOf(d.spec.template, dc).database.migrateOnStart, false, `${name} does not migrate at start`);
    assert.equal(envOf(dc).DATABASE_MIGRATION_URL, undefined, `${name} has no schema owner's URL`);
  }
  // The facade migrates only its own read-model database (cmd/migrate does not cover it).
  const facade = deployment("facade");
  const fc = facade.spec.template.spec.containers[0];
  assert.equal(configOf(facade.spec.template, fc).database.migrateOnStart, true);
  assert.equal(envOf(fc).DATABASE_URL, undefined, "the facade never touches the API database");
  assert.equal(envOf(fc).DATABASE_MIGRATION_URL, undefined);
  // Its config file is the others' in every other key.
  const cm = configMaps.get("logistic-package-api-config");
  const shared = parseYaml(cm.data["config.yml"]);
  const own = parseYaml(cm.data["facade.yml"]);
  own.database.migrateOnStart = shared.database.migrateOnStart;
  assert.deepEqual(own, shared, "facade.yml differs from config.yml in database.migrateOnStart only");
});

test("Services reach the named ports of the pods they select; PDBs keep one pod of each replicated Deployment", () => {
  for (const s of services) {
    const matching = deployments.filter((d) =>
      Object.entries(s.spec.selector).every(([k, v]) => d.spec.template.metadata.labels[k] === v),
    );
    assert.equal(matching.length, 1, `Service ${s.metadata.name} selects one Deployment`);
    const c = matching[0].spec.template.spec.containers[0];
    for (const p of s.spec.ports) {
      assert.equal(
        containerPort(c, p.targetPort),
        p.port,
        `${s.metadata.name}:${p.name} -> ${p.targetPort} of ${c.name}, same number`,
      );
    }
  }
  const pdbs = ofKind("PodDisruptionBudget");
  const covered = pdbs.map((pdb) => {
    const d = deployments.filter((x) =>
      Object.entries(pdb.spec.selector.matchLabels).every(([k, v]) => x.spec.template.metadata.labels[k] === v),
    );
    assert.equal(d.length, 1, `PDB ${pdb.metadata.name} selects one Deployment`);
    assert.ok(
      pdb.spec.minAvailable < d[0].spec.replicas,
      `PDB ${pdb.metadata.name} leaves a pod to evict (or drains would hang)`,
    );
    return d[0].metadata.labels["app.kubernetes.io/component"];
  });
  assert.deepEqual(covered.sort(), ["grpc-server", "retranslator"]);
});

test("pods get longer to stop than the binaries' graceful shutdown", () => {
  for (const [name, timeoutMs] of [
    ["grpc-server", (c: Config) => c.grpc.shutdownTimeoutMs],
    ["retranslator", (c: Config) => c.retranslator.shutdownTimeoutMs],
  ] as const) {
    const d = deployment(name);
    const c = d.spec.template.spec.containers[0];
    const preStop = c.lifecycle?.preStop?.sleep?.seconds ?? 0;
    const grace = d.spec.template.spec.terminationGracePeriodSeconds ?? 30;
    assert.ok(grace * 1000 > preStop * 1000 + timeoutMs(configOf(d.spec.template, c)), `${name}: grace ${grace} s`);
  }
});

test("the example Secrets hold placeholders only, and they fail closed", () => {
  for (const s of secrets.values()) {
    for (const [key, value] of Object.entries(s.stringData ?? {})) {
      assert.match(String(value), /CHANGE-ME/, `${s.metadata.name}.${key} is a marked placeholder`);
    }
    assert.equal(s.data, undefined, `${s.metadata.name}: placeholders in stringData, readable`);
  }
  const tls = secrets.get("logistic-package-api-tls");
  assert.equal(tls.type, "kubernetes.io/tls");
  // The example tokens file is refused: a placeholder can never be a working token.
  const file = join(temp, "tokens.yml");
  writeFileSync(file, keyValue(secrets.get("logistic-package-api-auth-tokens"), "tokens.yml")!);
  assert.throws(
    () => TokenTable.fromFile(file),
    (err: unknown) => err instanceof AuthConfigError && /tokenSha256/.test((err as Error).message),
  );
  // With real digests in place, the bot's entry is an admin's (its admins may /delete).
  const doc = parseYaml(readFileSync(file, "utf8")) as {
    tokens: { name: string; tokenSha256?: string; role: string }[];
  };
  for (const t of doc.tokens) t.tokenSha256 = "0".repeat(63) + String(doc.tokens.indexOf(t));
  writeFileSync(file, JSON.stringify(doc));
  assert.equal(TokenTable.fromFile(file).size, doc.tokens.length, "the file is valid once the digests are filled in");
  assert.equal(doc.tokens.find((t) => t.name === "telegram-bot")?.role, "admin");
});
