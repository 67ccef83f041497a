import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = join(root, "node_modules/.bin");
const buf = join(bin, "buf");
// buf finds the local protoc-gen-es plugin on PATH, as under `npx`.
const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ""}` };

function files(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      if (statSync(path).isDirectory()) walk(path);
      else out.set(relative(dir, path), readFileSync(path, "utf8"));
    }
  };
  walk(dir);
  return out;
}

test("the committed pkg/ is exactly what `make generate` produces from the protos", () => {
  const out = mkdtempSync(join(tmpdir(), "lpa-gen-"));
  execFileSync(buf, ["generate", "-o", out], { cwd: root, stdio: "pipe", env });
  const fresh = files(join(out, "pkg"));
  const committed = files(join(root, "pkg"));
  assert.deepEqual(
    [...committed.keys()].sort(),
    [...fresh.keys()].sort(),
    "generated file set differs: run `make generate`",
  );
  for (const [path, text] of fresh) {
    assert.equal(committed.get(path), text, `pkg/${path} drifted from the protos: run \`make generate\``);
  }
});

test("the committed api/openapi.json is exactly what `make generate` produces from the protos", () => {
  // Its own template (buf.gen.openapi.yaml): our protoc-gen-openapi plugin, run by buf as in `make generate`.
  const out = mkdtempSync(join(tmpdir(), "lpa-gen-openapi-"));
  execFileSync(buf, ["generate", "--template", "buf.gen.openapi.yaml", "-o", out], { cwd: root, stdio: "pipe", env });
  assert.deepEqual([...files(join(out, "api")).keys()], ["openapi.json"], "the plugin writes one file");
  assert.equal(
    readFileSync(join(root, "api/openapi.json"), "utf8"),
    readFileSync(join(out, "api/openapi.json"), "utf8"),
    "api/openapi.json drifted from the protos (or the gateway's status table or roles): run `make generate`",
  );
});

test("buf lint passes on the protos", () => {
  // execFileSync throws with buf's findings on a non-zero exit.
  execFileSync(buf, ["lint"], { cwd: root, stdio: "pipe", env });
});
