/**
 * The edge gateway kit: the host, the fetch handler for fetch-style runtimes,
 * the stateless handlers and their ports, signing and key helpers, route
 * factories, publisher helpers and a device client.
 */
export * from "./handlers/authenticate.js";
export * from "./handlers/ed25519.js";
export * from "./handlers/errors.js";
export * from "./handlers/execute-command.js";
export * from "./handlers/identifiers.js";
export type * from "./handlers/ports.js";
export * from "./handlers/public-auth.js";
export { createStaticRouter, defineRoutes } from "./handlers/router.js";
export * from "./handlers/signing.js";
export * from "./handlers/subscribe-events.js";
export {
  ConfigError,
  type GatewayConfig,
  loadConfig,
  loadRedisToolConfig,
  parseAddress,
  parseDuration,
} from "./runtime/config/config.js";
export {
  createResponseSigner,
  loadResponseSigner,
  parseSignerKeyPem,
} from "./runtime/config/signer.js";
export {
  createFetchHandler,
  createFetchHandlerFromPorts,
  type FetchHandler,
  type FetchHandlerOptions,
  type FetchHandlerPorts,
} from "./runtime/host/fetch-handler.js";
export {
  createGateway,
  type Gateway,
  type GatewayAddresses,
  type GatewayOptions,
  type PublicHttpListener,
} from "./runtime/host/gateway.js";
export {
  createHttpAuthUpstream,
  type HttpAuthUpstreamOptions,
} from "./runtime/http/auth-upstream.js";
export { createHttpRoute, HttpRouteHeaders, type HttpRouteOptions } from "./runtime/http/route.js";
export * from "./runtime/kit/device-client.js";
export * from "./runtime/kit/publishers.js";
export * from "./runtime/kit/resumable-subscription.js";
