import { readFileSync, type Stats, unwatchFile, watchFile } from "node:fs";
import { createSecureContext } from "node:tls";
import type { TlsMaterial } from "./api-listener.js";

export interface TlsFiles {
  certFile: string;
  keyFile: string;
  clientCaFile: string;
}

export class TlsConfigError extends Error {
  override name = "TlsConfigError";
}

/**
 * Reads and checks the PEM files (a key that does not match the certificate
 * fails here, at start or on reload, not at the first handshake). Undefined
 * when TLS is off.
 */
export function readTlsMaterial(files: TlsFiles): TlsMaterial | undefined {
  if (files.certFile === "") return undefined;
  const material: TlsMaterial = {
    cert: readPem(files.certFile, "tls.certFile"),
    key: readPem(files.keyFile, "tls.keyFile"),
  };
  if (files.clientCaFile !== "") material.clientCa = readPem(files.clientCaFile, "tls.clientCaFile");
  try {
    createSecureContext({ cert: material.cert, key: material.key, ca: material.clientCa });
  } catch (err) {
    throw new TlsConfigError(
      `tls.certFile ${files.certFile} / tls.keyFile ${files.keyFile}: ${(err as Error).message}`,
    );
  }
  return material;
}

function readPem(path: string, key: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new TlsConfigError(`${key} ${path}: ${(err as Error).message}`);
  }
}

/**
 * Calls `onChange` when any of the files changes (polled: it also sees a
 * Kubernetes secret's symlink swap, which inotify on the old target misses).
 * Several files written one after another cause one call.
 */
export function watchTlsFiles(files: TlsFiles, onChange: () => void, signal: AbortSignal, intervalMs = 1000): void {
  const paths = [files.certFile, files.keyFile, files.clientCaFile].filter((p) => p !== "");
  let pending: NodeJS.Timeout | undefined;
  const listener = (current: Stats, previous: Stats) => {
    if (current.mtimeMs === previous.mtimeMs && current.ino === previous.ino) return;
    clearTimeout(pending);
    pending = setTimeout(onChange, intervalMs);
    pending.unref();
  };
  for (const path of paths) watchFile(path, { interval: intervalMs, persistent: false }, listener);
  signal.addEventListener(
    "abort",
    () => {
      clearTimeout(pending);
      for (const path of paths) unwatchFile(path, listener);
    },
    { once: true },
  );
}
