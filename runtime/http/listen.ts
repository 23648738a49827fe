/** Binding listeners and closing them within a budget. */
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { formatAddress, type HostPort } from "../config/config.js";

/** Listens on `address` (empty host = all interfaces) and resolves the bound `host:port`. */
export function listenHttp(server: Server, address: HostPort): Promise<string> {
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
 * Stops accepting connections and resolves once the server closed; idle
 * keep-alive connections close at once, busy ones after `budgetMs`.
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
  });
}
