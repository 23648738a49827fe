/** Loading downstream routes from `GATEWAY_ROUTES_MODULE`. */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { Routes } from "../../handlers/ports.js";

/** The routes module could not be loaded or has no usable `routes` export. */
export class RoutesModuleError extends Error {
  override readonly name = "RoutesModuleError";
}

/**
 * Imports a JS module (path relative to the working directory) and returns its
 * `routes` export: an object mapping `message_type` to a route handler.
 */
export async function loadRoutesModule(path: string): Promise<Routes> {
  const url = pathToFileURL(resolve(path)).href;
  let module: { routes?: unknown };
  try {
    module = (await import(url)) as { routes?: unknown };
  } catch (error) {
    throw new RoutesModuleError(
      `GATEWAY_ROUTES_MODULE: cannot import ${path}: ${(error as Error).message}`,
    );
  }
  const routes = module.routes;
  if (typeof routes !== "object" || routes === null) {
    throw new RoutesModuleError(
      `GATEWAY_ROUTES_MODULE: ${path} has no "routes" export mapping message types to handlers`,
    );
  }
  return routes as Routes;
}
