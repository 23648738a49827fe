/** Binding listeners and closing them within a budget. */
import type { Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { formatAddress, type HostPort } from "../config/config.js";

/**
 * Per listening server: its open connections, each with the number of
 * requests it has in flight, and whether the server is closing.
 */
interface Connections {
  readonly inFlight: Map<Socket, number>;
  closing: boolean;
}

const connectionsOf = new WeakMap<Server, Connections>();

/**
 * Counts each connection's requests in flight, so that closing can end every
 * connection that carries none. Node's `closeIdleConnections` ends only
 * keep-alive connections between requests; a connection that never sent one
 * (a browser's or a proxy's preconnect) would hold the close for the whole
 * budget.
 */
function trackConnections(server: Server): void {
  if (connectionsOf.has(server)) return;
  const connections: Connections = { inFlight: new Map(), closing: false };
  connectionsOf.set(server, connections);
  const { inFlight } = connections;
  server.on("connection", (socket: Socket) => {
    inFlight.set(socket, 0);
    socket.once("close", () => inFlight.delete(socket));
  });
  server.on("request", (request, response) => {
    const socket = request.socket;
    inFlight.set(socket, (inFlight.get(socket) ?? 0) + 1);
    response.once("close", () => {
      const left = (inFlight.get(socket) ?? 1) - 1;
      if (!inFlight.has(socket)) return;
      inFlight.set(socket, left);
      // Closing: the connection's last answer is out, so end it (after what it buffered).
      if (left === 0 && connections.closing) socket.end();
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
    for (const [socket, requests] of connections.inFlight) {
      // Not a byte received: no request can be on its way. (One whose head is
      // still arriving is Node's to finish, like a keep-alive connection's.)
      if (requests === 0 && socket.bytesRead === 0) socket.destroy();
    }
  });
}
