import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Code } from "@connectrpc/connect";

/**
 * The API's description on the REST gateway: `GET /openapi.json` (the
 * committed api/openapi.json, byte for byte) and `GET /docs`, a Swagger UI
 * page served from the swagger-ui-dist package. Everything is read once at
 * start-up and served from memory: the page loads nothing from anywhere but
 * this server (no CDN, no validator badge), which its Content-Security-Policy
 * enforces. Neither route needs a token: they describe the API, and every
 * call the page makes goes through the gateway's routes and their auth.
 */
export interface ApiDocs {
  /** Serves the request when it is one of the documentation routes; false otherwise. */
  handle(req: DocsRequest, res: DocsResponse): boolean;
}

// The parts of node's HTTP/1 and HTTP/2 compat request/response used here.
interface DocsRequest {
  method?: string | undefined;
  url?: string | undefined;
  headers: Record<string, string | string[] | undefined>;
}
interface DocsResponse {
  writeHead(status: number, headers: Record<string, string | number>): unknown;
  end(body?: Buffer | string): unknown;
}

interface Asset {
  body: Buffer;
  headers: Record<string, string | number>;
}

export const openApiPath = "/openapi.json";
export const docsPath = "/docs";
const assetPrefix = "/docs/assets/";

/**
 * The page runs only our scripts and the bundle's (no inline script, no eval),
 * talks only to this origin, and cannot be framed. No inline style either:
 * Swagger UI's React sets element styles through the DOM, which CSP allows.
 * Its stylesheet and icons come from here, the icons as data: URIs inside
 * the stylesheet.
 */
export const docsContentSecurityPolicy = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const page = `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>logistic-package-api REST API</title>
    <link rel="stylesheet" href="${assetPrefix}swagger-ui.css">
    <link rel="stylesheet" href="${assetPrefix}page.css">
    <link rel="icon" type="image/png" href="${assetPrefix}favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="${assetPrefix}swagger-ui-bundle.js"></script>
    <script src="${assetPrefix}init.js"></script>
  </body>
</html>
`;

// A file of its own: the CSP allows no inline script.
const init = `"use strict";
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: ${JSON.stringify(openApiPath)},
    dom_id: "#swagger-ui",
    deepLinking: true,
    // No badge that sends the document to validator.swagger.io.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
`;

/** Reads the document and the Swagger UI files; a missing file stops start-up with its path. */
export function loadApiDocs(): ApiDocs {
  const uiDir = dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));
  const fromUi = (name: string) => readFileSync(join(uiDir, name));
  const assets = new Map<string, Asset>([
    [openApiPath, asset(readFileSync(findOpenApiDocument()), "application/json")],
    [
      docsPath,
      asset(Buffer.from(page), "text/html; charset=utf-8", { "content-security-policy": docsContentSecurityPolicy }),
    ],
    [`${assetPrefix}swagger-ui.css`, asset(fromUi("swagger-ui.css"), "text/css; charset=utf-8")],
    [`${assetPrefix}page.css`, asset(fromUi("index.css"), "text/css; charset=utf-8")],
    [`${assetPrefix}swagger-ui-bundle.js`, asset(fromUi("swagger-ui-bundle.js"), "text/javascript; charset=utf-8")],
    [`${assetPrefix}init.js`, asset(Buffer.from(init), "text/javascript; charset=utf-8")],
    [`${assetPrefix}favicon-32x32.png`, asset(fromUi("favicon-32x32.png"), "image/png")],
  ]);
  return {
    handle(req, res) {
      const path = pathOf(req.url);
      const found = path === undefined ? undefined : assets.get(path === `${docsPath}/` ? docsPath : path);
      if (found === undefined) return false;
      if (req.method !== "GET" && req.method !== "HEAD") {
        const text = JSON.stringify({
          code: Code.Unimplemented,
          message: "method not allowed on this path; allowed: GET, HEAD",
          details: [],
        });
        res.writeHead(405, {
          allow: "GET, HEAD",
          "content-type": "application/json",
          "content-length": Buffer.byteLength(text),
        });
        res.end(text);
        return true;
      }
      if (req.headers["if-none-match"] === found.headers.etag) {
        res.writeHead(304, { etag: found.headers.etag!, "cache-control": "no-cache" });
        res.end();
        return true;
      }
      res.writeHead(200, found.headers);
      res.end(req.method === "HEAD" ? undefined : found.body);
      return true;
    },
  };
}

function asset(body: Buffer, contentType: string, extra: Record<string, string> = {}): Asset {
  return {
    body,
    headers: {
      "content-type": contentType,
      "content-length": body.length,
      // Revalidate each time (a new release changes the files under the same paths); the ETag makes it cheap.
      "cache-control": "no-cache",
      etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"`,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
      ...extra,
    },
  };
}

function pathOf(url: string | undefined): string | undefined {
  try {
    return new URL(url ?? "/", "http://gateway").pathname;
  } catch {
    return undefined;
  }
}

/**
 * api/openapi.json at the repository (or image) root: two levels above this
 * module when it runs from source, three when it runs compiled from dist/.
 */
export function findOpenApiDocument(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  const tried: string[] = [];
  for (let i = 0; i < 4; i++) {
    dir = dirname(dir);
    const candidate = join(dir, "api", "openapi.json");
    if (existsSync(candidate)) return candidate;
    tried.push(candidate);
  }
  throw new Error(`the OpenAPI document is missing (run \`make generate\`); looked for ${tried.join(", ")}`);
}
