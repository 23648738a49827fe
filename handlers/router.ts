/** The static router: a fixed map from `message_type` to a downstream handler. */
import { isTypeName } from "./identifiers.js";
import type { Router, Routes } from "./ports.js";

/**
 * Creates a router over a plain object of routes. Throws when a key is not a
 * valid message type or a value is not a function, so a bad routes module
 * fails startup instead of failing calls.
 *
 * @example
 * const router = createStaticRouter({
 *   "demo.echo": async (command) => ({ resultCode: "ok", payload: command.payload }),
 * });
 */
export function createStaticRouter(routes: Routes = {}): Router {
  const table = new Map<string, Routes[string]>();
  for (const [messageType, handler] of Object.entries(routes)) {
    if (!isTypeName(messageType)) {
      throw new TypeError(`route "${messageType}" is not a valid message_type`);
    }
    if (typeof handler !== "function") {
      throw new TypeError(`route "${messageType}" is not a function`);
    }
    table.set(messageType, handler);
  }
  return { resolve: (messageType) => table.get(messageType) };
}

/** Identity helper that types a routes object. */
export function defineRoutes<const T extends Routes>(routes: T): T {
  return routes;
}
