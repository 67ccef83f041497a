import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

// Clients in another language for the tests: Debian's Python and its packages
// (scripts/ensure-python-grpc.sh), with stubs compiled from api/ in the run, so
// that they know the wire contract only.

export const run = promisify(execFile);
const root = fileURLToPath(new URL("../..", import.meta.url));
/** Debian's interpreter, whose packages (grpcio, confluent-kafka) the scripts install. */
export const python = "/usr/bin/python3";

/** A test client's script under test/clients/. */
export const clientScript = (name: string) => join(root, "test/clients", name);

/**
 * Python modules for `protos` (paths under api/ or third_party/proto/), compiled by
 * grpc_tools into a temporary directory; with `grpc`, the service stubs too.
 * `remove()` deletes them.
 */
export async function compilePythonStubs(
  protos: readonly string[],
  { grpc }: { grpc: boolean },
): Promise<{ dir: string; remove: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), "lpa-python-stubs-"));
  const remove = () => rmSync(dir, { recursive: true, force: true });
  try {
    await run(python, [
      "-m",
      "grpc_tools.protoc",
      `-I${root}api`,
      `-I${root}third_party/proto`,
      `--python_out=${dir}`,
      ...(grpc ? [`--grpc_python_out=${dir}`] : []),
      ...protos,
    ]);
  } catch (err) {
    remove();
    throw err;
  }
  return { dir, remove };
}

/** The JSON lines a client script printed, one object each. */
export function jsonLines<T>(stdout: string): T[] {
  return stdout
    .trim()
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as T);
}
