// The gateway's stateless part in a fetch-style runtime: the public auth
// routes and ExecuteCommand over Connect and gRPC-Web unary, configured from
// the same GATEWAY_* environment as the bin. A worker-style module, served by
//   deno serve --allow-net --allow-env --allow-read docs/examples/fetch-worker.mjs
//   bun run docs/examples/fetch-worker.mjs
// Push streams (SubscribeEvents) need the long-running node (npm start).
import { createFetchHandler } from "edge-gateway";
import { routes } from "./demo-routes.mjs";

const gateway = createFetchHandler({ routes });

export default {
  fetch: (request) => gateway.fetch(request),
};
