import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A certificate authority made for one test, with the files of its certificates. */
export interface TestCa {
  dir: string;
  caFile: string;
  ca: Buffer;
  /** Issues a certificate (for a server: SAN localhost and 127.0.0.1) and returns its file paths. */
  issue(name: string, options?: { client?: boolean }): { certFile: string; keyFile: string; cert: Buffer; key: Buffer };
  remove(): void;
}

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/** Real certificates from the openssl command line (EC P-256: fast to make). */
export function createTestCa(label = "test"): TestCa {
  const dir = mkdtempSync(join(tmpdir(), `lpa-ca-${label}-`));
  openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"], dir);
  openssl(
    ["req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2", "-subj", `/CN=${label} CA`, "-out", "ca.pem"],
    dir,
  );
  const caFile = join(dir, "ca.pem");
  return {
    dir,
    caFile,
    ca: readFileSync(caFile),
    issue(name, options = {}) {
      openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", `${name}.key`], dir);
      openssl(["req", "-new", "-key", `${name}.key`, "-subj", `/CN=${name}`, "-out", `${name}.csr`], dir);
      const ext = options.client
        ? "extendedKeyUsage=clientAuth\n"
        : "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
      writeFileSync(join(dir, `${name}.ext`), ext);
      openssl(
        [
          "x509",
          "-req",
          "-in",
          `${name}.csr`,
          "-CA",
          "ca.pem",
          "-CAkey",
          "ca.key",
          "-CAcreateserial",
          "-days",
          "2",
          "-sha256",
          "-extfile",
          `${name}.ext`,
          "-out",
          `${name}.pem`,
        ],
        dir,
      );
      const certFile = join(dir, `${name}.pem`);
      const keyFile = join(dir, `${name}.key`);
      return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
