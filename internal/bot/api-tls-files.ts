import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { type Config, ConfigError } from "../config/config.js";
import type { GrpcPackageApiOptions } from "./package-api.js";

/**
 * Reads the PEM files at start-up, so that a wrong path or a file that is not PEM
 * stops the bot naming the key, instead of failing on the first command.
 */
export function readApiTlsFiles(settings: Config["bot"]): NonNullable<GrpcPackageApiOptions["tls"]> {
  const read = (key: "apiCaFile" | "apiCertFile" | "apiKeyFile", env: string): Buffer | undefined => {
    const path = settings[key];
    if (path === "") return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new ConfigError(`config key "bot.${key}" (env ${env}): cannot read ${path}: ${(err as Error).message}`);
    }
  };
  const ca = read("apiCaFile", "BOT_API_CA_FILE");
  const cert = read("apiCertFile", "BOT_API_CERT_FILE");
  const key = read("apiKeyFile", "BOT_API_KEY_FILE");
  const check = (what: string, build: () => unknown) => {
    try {
      build();
    } catch (err) {
      throw new ConfigError(`${what}: ${(err as Error).message}`);
    }
  };
  // createSecureContext ignores a CA file without certificates; X509Certificate does not.
  if (ca !== undefined) {
    check(
      `config key "bot.apiCaFile" (env BOT_API_CA_FILE): ${settings.apiCaFile} is not a PEM certificate`,
      () => new X509Certificate(ca),
    );
  }
  if (cert !== undefined && key !== undefined) {
    check(
      `config keys "bot.apiCertFile", "bot.apiKeyFile" (env BOT_API_CERT_FILE, BOT_API_KEY_FILE): not a matching PEM certificate and key`,
      () => createSecureContext({ cert, key }),
    );
  }
  return { ...(ca !== undefined && { ca }), ...(cert !== undefined && { cert }), ...(key !== undefined && { key }) };
}
