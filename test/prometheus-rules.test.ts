// The Prometheus files of deploy/prometheus checked with promtool (Debian's `prometheus`
// package; scripts/ensure-promtool.sh installs it for make test): the configuration and its
// rule files load, the alert rules' unit tests (alerts.test.yml) pass and can fail, and every
// alert carries what an on-call engineer needs: a `for:`, a severity, a summary, a
// description and a runbook section that exists in docs/operations.md.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";

const root = fileURLToPath(new URL("..", import.meta.url));
const dir = join(root, "deploy", "prometheus");
const alertsText = readFileSync(join(dir, "alerts.yml"), "utf8");
const rules = (parseYaml(alertsText) as { groups: { name: string; rules: any[] }[] }).groups.flatMap((g) => g.rules);
const alerts = rules.filter((r) => r.alert !== undefined);
const unitTests = parseYaml(readFileSync(join(dir, "alerts.test.yml"), "utf8")) as {
  rule_files: string[];
  tests: any[];
};

const temp = mkdtempSync(join(tmpdir(), "lpa-promtool-"));
after(() => rmSync(temp, { recursive: true, force: true }));

function promtool(args: string[], cwd = dir): { code: number | null; output: string } {
  const r = spawnSync("promtool", args, { cwd, encoding: "utf8", timeout: 120_000 });
  assert.ok(!r.error, `promtool runs (scripts/ensure-promtool.sh installs it): ${r.error?.message}`);
  return { code: r.status, output: `${r.stdout}${r.stderr}` };
}

/** GitHub's anchor of a Markdown heading. */
const anchor = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");

test("promtool check config: prometheus.yml and the rule files it loads", () => {
  const { code, output } = promtool(["check", "config", "prometheus.yml"]);
  assert.equal(code, 0, output);
  assert.match(output, /SUCCESS: 1 rule files found/);
  assert.match(output, /alerts\.yml[\s\S]*SUCCESS: \d+ rules found/);
  // compose mounts every rule file where prometheus.yml (in /etc/prometheus) looks for it.
  const prom = parseYaml(readFileSync(join(dir, "prometheus.yml"), "utf8")) as { rule_files: string[] };
  const compose = parseYaml(readFileSync(join(root, "deploy", "docker-compose.yml"), "utf8")) as any;
  const volumes = compose.services.prometheus.volumes as string[];
  for (const file of prom.rule_files) {
    assert.ok(
      volumes.includes(`./prometheus/${file}:/etc/prometheus/${file}:ro`),
      `compose mounts ${file} next to prometheus.yml`,
    );
  }
});

test("promtool check rules: alerts.yml", () => {
  const { code, output } = promtool(["check", "rules", "alerts.yml"]);
  assert.equal(code, 0, output);
  assert.match(output, new RegExp(`SUCCESS: ${rules.length} rules found`));
});

test("promtool test rules: alerts.test.yml passes", () => {
  assert.deepEqual(unitTests.rule_files, ["alerts.yml"]);
  const { code, output } = promtool(["test", "rules", "alerts.test.yml"]);
  assert.equal(code, 0, output);
  assert.match(output, /SUCCESS/);
});

test("the unit tests catch a broken rule: a wrong SLO threshold, a misspelt metric", () => {
  const broken = (name: string, from: string | RegExp, to: string) => {
    const mutated = alertsText.replace(from, to);
    assert.notEqual(mutated, alertsText, `${name}: the mutation applies`);
    const work = mkdtempSync(join(temp, "mutant-"));
    writeFileSync(join(work, "alerts.yml"), mutated);
    copyFileSync(join(dir, "alerts.test.yml"), join(work, "alerts.test.yml"));
    const { code, output } = promtool(["test", "rules", "alerts.test.yml"], work);
    assert.notEqual(code, 0, `${name}: the unit tests fail\n${output}`);
  };
  broken("default SLO 50 s instead of 5 s", "or on() vector(5))", "or on() vector(50))");
  broken(
    "the exported objective ignored",
    "(max(logistic_package_api_retranslator_slo_seconds) or on() vector(5))",
    "5",
  );
  broken(
    "sum instead of max",
    "max(logistic_package_api_retranslator_outbox_oldest_event_age_seconds)\n",
    "sum(logistic_package_api_retranslator_outbox_oldest_event_age_seconds)\n",
  );
  broken("misspelt claim counter", "retranslator_claimed_events_total[5m]", "retranslator_claims_events_total[5m]");
  broken("client errors counted", /code=~"Internal\|Unknown\|Unavailable\|DataLoss\|DeadlineExceeded"/g, 'code!="OK"');
});

test("every alert has a for:, a severity, a summary, a description and a runbook section in docs/operations.md", () => {
  assert.ok(alerts.length >= 8, `${alerts.length} alerts`);
  const operations = readFileSync(join(root, "docs", "operations.md"), "utf8");
  const anchors = new Set([...operations.matchAll(/^#{1,6}\s+(.+)$/gm)].map((m) => anchor(m[1]!)));
  for (const a of alerts) {
    assert.match(
      a.alert,
      /^LogisticPackageApi[A-Za-z]+$/,
      "named after the service, so it is recognisable in a shared Prometheus",
    );
    assert.match(String(a.for ?? ""), /^\d+[smh]$/, `${a.alert}: for:`);
    assert.ok(["warning", "critical"].includes(a.labels?.severity), `${a.alert}: severity warning or critical`);
    assert.ok(String(a.annotations?.summary ?? "").length > 10, `${a.alert}: summary`);
    assert.ok(String(a.annotations?.description ?? "").length > 20, `${a.alert}: description`);
    const runbook = /^docs\/operations\.md#(.+)$/.exec(a.annotations?.runbook ?? "");
    assert.ok(runbook, `${a.alert}: runbook points at docs/operations.md#section`);
    assert.equal(runbook[1], anchor(a.alert), `${a.alert}: its section is named after it`);
    assert.ok(anchors.has(runbook[1]!), `${a.alert}: docs/operations.md has a section "${a.alert}"`);
  }
  assert.equal(new Set(alerts.map((a) => a.alert)).size, alerts.length, "alert names are unique");
});

test("every alert is unit-tested both firing and silent", () => {
  const cases = unitTests.tests.flatMap((t) => t.alert_rule_test as { alertname: string; exp_alerts: unknown[] }[]);
  for (const a of alerts) {
    const mine = cases.filter((c) => c.alertname === a.alert);
    assert.ok(
      mine.some((c) => c.exp_alerts.length > 0),
      `${a.alert} has a case where it fires`,
    );
    assert.ok(
      mine.some((c) => c.exp_alerts.length === 0),
      `${a.alert} has a case where it stays silent`,
    );
  }
  for (const c of cases)
    assert.ok(
      alerts.some((a) => a.alert === c.alertname),
      `the unit test of ${c.alertname} tests an existing alert`,
    );
});

test("the API error alert counts server-side codes only, and the SLO alert compares with the exported objective, 5 s without it", () => {
  const errors = alerts.find((a) => a.alert === "LogisticPackageApiServerErrors");
  assert.ok(errors);
  const codes = [...String(errors.expr).matchAll(/code=~"([^"]+)"/g)].map((m) => m[1]!.split("|").sort());
  assert.ok(codes.length >= 1);
  for (const c of codes) assert.deepEqual(c, ["DataLoss", "DeadlineExceeded", "Internal", "Unavailable", "Unknown"]);
  const slo = alerts.find((a) => a.alert === "LogisticPackageApiOutboxOlderThanSlo");
  assert.equal(
    String(slo?.expr).replace(/\s+/g, " ").trim(),
    "max(logistic_package_api_retranslator_outbox_oldest_event_age_seconds) > on() (max(logistic_package_api_retranslator_slo_seconds) or on() vector(5))",
  );
});
