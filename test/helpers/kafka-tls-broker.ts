import { execFile } from "node:child_process";
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { promisify } from "node:util";

// librdkafka's mock cluster (tools/kafka-mock) speaks neither TLS nor SASL, so
// the Kafka TLS/SASL tests talk to this: a node:tls server that presents a real
// certificate and answers the first requests of every kafkajs connection
// (ApiVersions, SaslHandshake, SaslAuthenticate with PLAIN or SCRAM) like a
// broker does. Nothing after authentication is implemented: a client that
// gets that far has proved the TLS and SASL settings.

const run = promisify(execFile);

export interface TestCa {
  dir: string;
  /** PEM file of the CA certificate (what KAFKA_SSL_CA_FILE points to). */
  caFile: string;
  /** Server certificate and key for 127.0.0.1, signed by this CA. */
  cert: string;
  key: string;
  cleanup(): Promise<void>;
}

/** A fresh CA and a server certificate for 127.0.0.1 it signed (openssl, real RSA keys). */
export async function createTestCa(name: string): Promise<TestCa> {
  const dir = await mkdtemp(join(tmpdir(), `lpa-kafka-tls-${name}-`));
  const p = (f: string) => join(dir, f);
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
    "-subj",
    `/CN=${name} test CA`,
    "-keyout",
    p("ca.key"),
    "-out",
    p("ca.pem"),
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign",
  ]);
  await run("openssl", [
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    "/CN=127.0.0.1",
    "-keyout",
    p("server.key"),
    "-out",
    p("server.csr"),
  ]);
  await writeFile(p("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    p("server.csr"),
    "-CA",
    p("ca.pem"),
    "-CAkey",
    p("ca.key"),
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    p("ext.cnf"),
    "-out",
    p("server.pem"),
  ]);
  return {
    dir,
    caFile: p("ca.pem"),
    cert: await readFile(p("server.pem"), "utf8"),
    key: await readFile(p("server.key"), "utf8"),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

export type BrokerMechanism = "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512";

export interface BrokerEvent {
  kind: "tls-error" | "request" | "authenticated" | "auth-failed";
  detail: string;
}

export interface TlsKafkaBroker {
  /** "127.0.0.1:port", for KAFKA_BROKERS. */
  address: string;
  events: BrokerEvent[];
  stop(): Promise<void>;
}

const API_VERSIONS = 18;
const SASL_HANDSHAKE = 17;
const SASL_AUTHENTICATE = 36;
const SASL_AUTHENTICATION_FAILED = 58;

/** A TLS "broker" that accepts exactly `user`/`password` with any of the three mechanisms. */
export async function startTlsKafkaBroker(ca: TestCa, user: string, password: string): Promise<TlsKafkaBroker> {
  const events: BrokerEvent[] = [];
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer({ cert: ca.cert, key: ca.key }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    socket.setTimeout(10_000, () => socket.destroy());
    serve(socket, user, password, events);
  });
  server.on("tlsClientError", (err) => events.push({ kind: "tls-error", detail: err.message }));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  return {
    address: `127.0.0.1:${port}`,
    events,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function serve(socket: tls.TLSSocket, user: string, password: string, events: BrokerEvent[]): void {
  let buffered = Buffer.alloc(0);
  let mechanism: BrokerMechanism | undefined;
  let scram:
    | { clientFirstBare: string; serverFirst: string; nonce: string; salt: Buffer; iterations: number }
    | undefined;
  socket.on("data", (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    // A request: int32 size, then int16 api key, int16 version, int32 correlation id, string client id, body.
    while (buffered.length >= 4 && buffered.length >= 4 + buffered.readInt32BE(0)) {
      const size = buffered.readInt32BE(0);
      if (size > 1 << 20) return void socket.destroy();
      const frame = buffered.subarray(4, 4 + size);
      buffered = buffered.subarray(4 + size);
      const apiKey = frame.readInt16BE(0);
      const correlationId = frame.readInt32BE(4);
      const clientIdLength = frame.readInt16BE(8);
      const body = frame.subarray(10 + Math.max(clientIdLength, 0));
      events.push({ kind: "request", detail: `api ${apiKey}` });
      const reply = (payload: Buffer) => {
        const head = Buffer.alloc(8);
        head.writeInt32BE(4 + payload.length, 0);
        head.writeInt32BE(correlationId, 4);
        socket.write(Buffer.concat([head, payload]));
      };
      if (apiKey === API_VERSIONS) {
        // error 0, [ApiVersions 0..2, SaslHandshake 0..1, SaslAuthenticate 0..0], throttle 0
        reply(
          Buffer.concat([
            int16(0),
            int32(3),
            apiRange(API_VERSIONS, 0, 2),
            apiRange(SASL_HANDSHAKE, 0, 1),
            apiRange(SASL_AUTHENTICATE, 0, 0),
            int32(0),
          ]),
        );
      } else if (apiKey === SASL_HANDSHAKE) {
        const asked = body.subarray(2, 2 + body.readInt16BE(0)).toString();
        const enabled: BrokerMechanism[] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
        mechanism = enabled.find((m) => m === asked);
        reply(Buffer.concat([int16(mechanism === undefined ? 33 : 0), int32(enabled.length), ...enabled.map(str)]));
      } else if (apiKey === SASL_AUTHENTICATE && mechanism !== undefined) {
        const auth = body.subarray(4, 4 + body.readInt32BE(0)).toString("utf8");
        const fail = (why: string) => {
          events.push({ kind: "auth-failed", detail: `${mechanism}: ${why}` });
          reply(
            Buffer.concat([
              int16(SASL_AUTHENTICATION_FAILED),
              str("Authentication failed: invalid credentials"),
              bytes(""),
            ]),
          );
        };
        const ok = (answer: string, done: boolean) => {
          if (done) events.push({ kind: "authenticated", detail: `${mechanism} ${user}` });
          reply(Buffer.concat([int16(0), int16(-1), bytes(answer)]));
        };
        if (mechanism === "PLAIN") {
          const [, u, pw] = auth.split("\u0000");
          if (u === user && pw === password) ok("", true);
          else fail("wrong user or password");
        } else if (scram === undefined) {
          // client-first: "n,,n=<user>,r=<client nonce>"
          const clientFirstBare = auth.replace(/^n,,/, "");
          const attrs = parseScram(clientFirstBare);
          if (attrs.n !== user) return fail("unknown user");
          const nonce = `${attrs.r}${randomBytes(12).toString("base64url")}`;
          const salt = randomBytes(16);
          const iterations = 4096;
          const serverFirst = `r=${nonce},s=${salt.toString("base64")},i=${iterations}`;
          scram = { clientFirstBare, serverFirst, nonce, salt, iterations };
          ok(serverFirst, false);
        } else {
          // client-final: "c=biws,r=<nonce>,p=<proof>"; RFC 5802.
          const attrs = parseScram(auth);
          const hash = mechanism === "SCRAM-SHA-256" ? "sha256" : "sha512";
          const length = hash === "sha256" ? 32 : 64;
          const salted = pbkdf2Sync(password, scram.salt, scram.iterations, length, hash);
          const clientKey = createHmac(hash, salted).update("Client Key").digest();
          const storedKey = createHash(hash).update(clientKey).digest();
          const withoutProof = auth.slice(0, auth.lastIndexOf(",p="));
          const authMessage = `${scram.clientFirstBare},${scram.serverFirst},${withoutProof}`;
          const signature = createHmac(hash, storedKey).update(authMessage).digest();
          const expected = Buffer.from(clientKey.map((b, i) => b ^ signature[i]!));
          const proof = Buffer.from(attrs.p ?? "", "base64");
          if (attrs.r !== scram.nonce || proof.length !== expected.length || !timingSafeEqual(proof, expected)) {
            return fail("wrong proof");
          }
          const serverKey = createHmac(hash, salted).update("Server Key").digest();
          ok(`v=${createHmac(hash, serverKey).update(authMessage).digest("base64")}`, true);
        }
      } else {
        // Past authentication: the test has what it came for.
        socket.destroy();
      }
    }
  });
}

function parseScram(message: string): Record<string, string> {
  const attrs: Record<string, string> = {};
  for (const part of message.split(",")) {
    const i = part.indexOf("=");
    if (i > 0) attrs[part.slice(0, i)] = part.slice(i + 1);
  }
  return attrs;
}

const int16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const str = (s: string) => Buffer.concat([int16(Buffer.byteLength(s)), Buffer.from(s)]);
const bytes = (s: string) => Buffer.concat([int32(Buffer.byteLength(s)), Buffer.from(s)]);
const apiRange = (key: number, min: number, max: number) => Buffer.concat([int16(key), int16(min), int16(max)]);
