/**
 * The public listener's CORS header lists and Connect paths are written out
 * so that it loads Connect only when a browser first calls; these tests keep
 * them equal to what @connectrpc/connect and the generated service say.
 */
import { cors } from "@connectrpc/connect";
import { expect, it } from "vitest";
import { EdgeGatewayService } from "../proto/gen-es/edgegateway/v1/edge_gateway_pb.js";
import { CORS_ALLOWED_HEADERS, CORS_EXPOSED_HEADERS } from "../runtime/http/cors.js";
import { CONNECT_PATHS } from "../runtime/http/public.js";

it("allows and exposes exactly Connect's CORS headers (plus the W3C trace context)", () => {
  expect(CORS_ALLOWED_HEADERS).toEqual([
    ...cors.allowedHeaders.map((name) => name.toLowerCase()),
    "traceparent",
    "tracestate",
  ]);
  expect(CORS_EXPOSED_HEADERS).toEqual(cors.exposedHeaders.map((name) => name.toLowerCase()));
});

it("mounts a Connect path for every method of the service", () => {
  expect([...CONNECT_PATHS]).toEqual(
    EdgeGatewayService.methods.map((method) => `/${EdgeGatewayService.typeName}/${method.name}`),
  );
});
