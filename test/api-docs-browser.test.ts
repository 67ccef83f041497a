// The API reference page (GET /docs) in a real browser: Debian's chromium,
// headless, driven by playwright-core, against a server with TLS and
// AUTH_TOKENS_FILE as an operator runs it. The page must render the five
// operations from the served document, load nothing from anywhere but this
// server, break no rule of its Content-Security-Policy, and its "Try it out"
// must reach the API with the token given in "Authorize".
// Run: bash scripts/test.sh test/api-docs-browser.test.ts (scripts/ensure-chromium.sh installs chromium)

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { createTestCa } from "./helpers/certs.js";
import { secureServerEnv } from "./helpers/config.js";
import { useFixture } from "./helpers/fixture.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const readerToken = "docs-reader-token-3e9a1f0c7b5d";
const doc = JSON.parse(readFileSync(join(root, "api/openapi.json"), "utf8")) as {
  paths: Record<string, Record<string, { operationId: string; summary: string }>>;
};
const operations = Object.entries(doc.paths).flatMap(([path, verbs]) =>
  Object.entries(verbs).map(([verb, op]) => ({ verb: verb.toUpperCase(), path, ...op })),
);

const ca = createTestCa("docs");
const fx = useFixture({
  env: { server: secureServerEnv(ca, [{ name: "docs-reader", token: readerToken, role: "reader" }]) },
});
let origin: string;
let profile: string;
let browser: BrowserContext;
fx.onSetUp(async () => {
  origin = `https://127.0.0.1:${fx.server.ports.gateway}`;
  profile = mkdtempSync(join(tmpdir(), "lpa-chromium-"));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    // The test CA is not in the browser's store; the server's certificate is still real TLS.
    ignoreHTTPSErrors: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    timeout: 60_000,
  });
});
fx.onTearDown(async () => {
  await browser?.close();
  if (profile !== undefined) rmSync(profile, { recursive: true, force: true });
  ca.remove();
});

interface Watched {
  page: Page;
  /** Every request the page made (its URL), wherever it went. */
  requests: string[];
  /** Console errors and CSP violations reported by the page. */
  problems: string[];
}

async function openDocs(): Promise<Watched> {
  const page = await browser.newPage();
  const requests: string[] = [];
  const problems: string[] = [];
  page.on("request", (r) => requests.push(r.url()));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  // A request that the CSP blocks never reaches the network: the page reports it as a violation.
  // (Source text: the page's DOM types are not in this project's TypeScript libs.)
  await page.addInitScript({
    content: `document.addEventListener("securitypolicyviolation", (e) => {
      console.error("CSP violation: " + e.violatedDirective + " " + e.blockedURI);
    });`,
  });
  const response = await page.goto(`${origin}/docs`, { waitUntil: "load" });
  assert.equal(response?.status(), 200);
  // Bounded wait for Swagger UI to fetch the document and render it.
  await page
    .locator(".opblock")
    .nth(operations.length - 1)
    .waitFor({ timeout: 30_000 });
  return { page, requests, problems };
}

describe("GET /docs in headless Chromium (TLS, AUTH_TOKENS_FILE set)", () => {
  test("the page renders the five operations with their paths and summaries", async () => {
    const { page, problems } = await openDocs();
    try {
      assert.equal(await page.locator(".opblock").count(), 5);
      for (const op of operations) {
        const block = page.locator(`.opblock-${op.verb.toLowerCase()}`).filter({
          has: page.locator(`.opblock-summary-path[data-path="${op.path}"]`),
        });
        assert.equal(await block.count(), 1, `${op.verb} ${op.path} rendered once`);
        assert.equal((await block.locator(".opblock-summary-method").textContent())?.trim(), op.verb);
        assert.equal((await block.locator(".opblock-summary-description").textContent())?.trim(), op.summary);
      }
      assert.match((await page.locator(".info .title").textContent()) ?? "", /logistic-package-api REST gateway/);
      assert.deepEqual(problems, []);
    } finally {
      await page.close();
    }
  });

  test("the page loads everything from this server and nothing from anywhere else", async () => {
    const { page, requests, problems } = await openDocs();
    try {
      const outside = requests.filter((url) => !url.startsWith(`${origin}/`) && !url.startsWith("data:"));
      assert.deepEqual(outside, []);
      // What it did load: the page, its assets and the document.
      assert.ok(requests.includes(`${origin}/openapi.json`), `requests: ${requests.join(", ")}`);
      assert.ok(requests.includes(`${origin}/docs/assets/swagger-ui-bundle.js`));
      assert.deepEqual(problems, []);
    } finally {
      await page.close();
    }
  });

  test("Try it out calls the API with the token given in Authorize (and is refused without it)", async () => {
    const { page, problems } = await openDocs();
    try {
      const list = page
        .locator(".opblock-get")
        .filter({ has: page.locator('.opblock-summary-path[data-path="/v1/packages"]') });
      const execute = async () => {
        const answer = page.waitForResponse((r) => new URL(r.url()).pathname === "/v1/packages", { timeout: 20_000 });
        await list.locator("button.execute").click();
        return answer;
      };
      await list.locator(".opblock-summary").click();
      await list.locator("button.try-out__btn").click();

      const refused = await execute();
      assert.equal(refused.status(), 401);

      await page.locator(".auth-wrapper button.authorize").click();
      await page.locator(".modal-ux input[type=text], .modal-ux input[type=password]").first().fill(readerToken);
      await page.locator(".modal-ux button.authorize").click();
      await page.locator(".modal-ux button.btn-done").click();

      const answered = await execute();
      assert.equal(answered.status(), 200);
      assert.equal(answered.request().headers().authorization, `Bearer ${readerToken}`);
      assert.deepEqual(await answered.json(), { PackageTitle: [], Packages: [] });
      // The 401 is the API's answer shown to the user, not a page problem; nothing else went wrong.
      assert.deepEqual(
        problems.filter((p) => !/401/.test(p)),
        [],
      );
    } finally {
      await page.close();
    }
  });

  test("/docs and /openapi.json need no token while the API does; /docs carries a strict CSP", async () => {
    const page = await browser.newPage();
    try {
      const docs = await page.request.get(`${origin}/docs`);
      assert.equal(docs.status(), 200);
      const csp = docs.headers()["content-security-policy"] ?? "";
      assert.match(csp, /default-src 'none'/);
      assert.match(csp, /script-src 'self'(;|$)/, "no inline or eval'd script");
      assert.doesNotMatch(csp, /unsafe-/, "no inline script or style, no eval");
      assert.match(csp, /connect-src 'self'(;|$)/);
      assert.match(csp, /frame-ancestors 'none'/);
      const document = await page.request.get(`${origin}/openapi.json`);
      assert.equal(document.status(), 200);
      assert.ok((await document.body()).equals(readFileSync(join(root, "api/openapi.json"))));
      const api = await page.request.get(`${origin}/v1/packages`);
      assert.equal(api.status(), 401);
    } finally {
      await page.close();
    }
  });
});
