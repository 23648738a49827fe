/** Binding listeners and closing them within a budget. */
import type { Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { formatAddress, type HostPort } from "../config/config.js";

/** Per listening server: its open connections, and whether it is closing. */
interface Connections {
  readonly open: Set<Socket>;
  closing: boolean;
}

const connectionsOf = new WeakMap<Server, Connections>();

/**
 * Keeps each server's open connections, so that closing can end the ones
 * that never sent a byte: Node's `closeIdleConnections` ends only keep-alive
 * connections between requests, and one that never sent a request (a
 * browser's or a proxy's preconnect) would hold the close for the whole
 * budget. While closing, each answer that goes out lets Node end its
 * connection if that one is idle now.
 */
function trackConnections(server: Server): void {
  if (connectionsOf.has(server)) return;
  const connections: Connections = { open: new Set(), closing: false };
  connectionsOf.set(server, connections);
  server.on("connection", (socket: Socket) => {
    connections.open.add(socket);
    socket.once("close", () => connections.open.delete(socket));
  });
  server.on("request", (_request, response) => {
    response.once("close", () => {
      if (connections.closing) server.closeIdleConnections();
    });
  });
}

/** Listens on `address` (empty host = all interfaces) and resolves the bound `host:port`. */
export function listenHttp(server: Server, address: HostPort): Promise<string> {
  trackConnections(server);
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    server.once("error", onError);
    const done = () => {
      server.off("error", onError);
      const bound = server.address() as AddressInfo;
      resolve(formatAddress({ host: bound.address, port: bound.port }));
    };
    if (address.host === "") server.listen(address.port, done);
    else server.listen(address.port, address.host, done);
  });
}

/**
 * Stops accepting connections and resolves once the server closed.
 * Keep-alive connections between requests close at once, and (on a server
 * bound by {@link listenHttp}) so do connections that never sent a byte;
 * busy ones close once their last answer is out, and any still open after
 * `budgetMs` are destroyed.
 */
export function closeHttp(server: Server, budgetMs: number): Promise<void> {
  if (!server.listening) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), budgetMs);
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
    const connections = connectionsOf.get(server);
    if (connections === undefined) return;
    connections.closing = true;
    for (const socket of connections.open) {
      // Not a byte received: no request can be on its way. (One whose head is
      // still arriving is Node's to finish, like a keep-alive connection's.)
      if (socket.bytesRead === 0) socket.destroy();
    }
  });
}
