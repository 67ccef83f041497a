import net from "node:net";

/**
 * A loopback port that was free a moment ago, for a child process that must be
 * told its port up front (an in-process app listens on port 0 instead). Another
 * process may take it in between: tests that use it start the child at once.
 */
export async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = probe.address() as net.AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}
