/** The admin HTTP listener: Prometheus `/metrics` only. */
import { createServer, type Server } from "node:http";
import type { Registry } from "prom-client";
import type { Logger } from "../../handlers/ports.js";

/** Creates the admin server; `GET /metrics` answers the registry in Prometheus text format. */
export function createAdminHttpServer(registry: Registry, logger: Logger): Server {
  return createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    if (path !== "/metrics") {
      response.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("not found\n");
      return;
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    registry.metrics().then(
      (text) => {
        response.writeHead(200, { "content-type": registry.contentType });
        response.end(request.method === "HEAD" ? undefined : text);
      },
      (error: unknown) => {
        logger.error("metrics collection failed", error);
        response.writeHead(500).end();
      },
    );
  });
}
