import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";

export interface VersionInfo {
  name: string;
  version: string;
  commitHash: string;
}

/**
 * Version from package.json; commit from COMMIT_HASH (set by the Docker build)
 * or, in a checkout, from git.
 */
export function versionInfo(): VersionInfo {
  const pkg = JSON.parse(readFileSync(packageJson(), "utf8")) as {
    name: string;
    version: string;
  };
  return { name: pkg.name, version: pkg.version, commitHash: process.env.COMMIT_HASH ?? gitCommit() };
}

function gitCommit(): string {
  try {
    return execFileSync("git", ["rev-parse", "HEAD"], {
      cwd: new URL("../..", import.meta.url),
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
      timeout: 2000,
    }).trim();
  } catch {
    return "unknown";
  }
}

/**
 * The repository's package.json: two levels up from the sources, three from
 * the compiled dist/internal/app/ (the build does not copy it into dist/).
 */
function packageJson(): URL {
  const source = new URL("../../package.json", import.meta.url);
  return existsSync(source) ? source : new URL("../../../package.json", import.meta.url);
}
