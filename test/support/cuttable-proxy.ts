/** A TCP proxy for tests that need a device's connection to drop under it. */
import { connect, createServer, type Socket } from "node:net";
import type { Cleanup } from "./cleanup.js";

/**
 * A loopback TCP proxy to `target` whose open connections the test can cut,
 * as a network change or a middlebox dropping the device's connection does.
 */
export async function cuttableProxy(
  target: string,
  cleanup: Cleanup,
): Promise<{ address: string; cut(): void }> {
  const [host, port] = [
    target.slice(0, target.lastIndexOf(":")),
    target.slice(target.lastIndexOf(":") + 1),
  ];
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  };
  const server = createServer((inbound) => {
    const outbound = connect(Number(port), host);
    track(inbound);
    track(outbound);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    inbound.on("error", () => outbound.destroy());
    outbound.on("error", () => inbound.destroy());
    inbound.on("close", () => outbound.destroy());
    outbound.on("close", () => inbound.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanup.defer(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  const { port: proxyPort } = server.address() as { port: number };
  return {
    address: `127.0.0.1:${proxyPort}`,
    cut: () => {
      for (const socket of sockets) socket.resetAndDestroy();
    },
  };
}
