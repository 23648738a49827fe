/**
 * What the authenticated gRPC listener serves: one manifest of services, each
 * a nice-grpc definition with its implementation, mounted by one loop.
 */
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import type { ServiceImplementation } from "nice-grpc";
import type { createExecuteCommandHandler } from "../../handlers/execute-command.js";
import type { Logger } from "../../handlers/ports.js";
import type { ExecuteCommandResponse } from "../../proto/gen/edgegateway/v1/edge_gateway.js";
import type { PushSessionDeps } from "../push/push-session.js";
import { createDirectUnaryLane } from "./direct-unary.js";
import { frameWith } from "./grpc-frames.js";
import type { GrpcHealth } from "./health.js";
import { combineLanes, type StreamLane } from "./http2-lane.js";
import type { LaneOptions } from "./lane-call.js";
import { createPushLane } from "./push-lane.js";
import { deadlineOf, SafeEdgeGatewayServiceDefinition } from "./server.js";
import { createSubscribeEventsMethod } from "./subscribe-events.js";
import { traceHeadersOnce } from "./tracing.js";

// biome-ignore lint/suspicious/noExplicitAny: each service has its own nice-grpc types.
type AnyService = any;

/** One service of the manifest. */
export interface GrpcService {
  readonly definition: AnyService;
  readonly implementation: AnyService;
  /** Served through the gateway middleware (shutdown gate, error table, metrics) and tracing. */
  readonly gated: boolean;
  /**
   * The lane (`runtime/grpc/http2-lane.ts`) that serves some of the service's
   * methods straight on their HTTP/2 streams while no tracer provider is
   * registered; grpc-js serves the rest, and every call while tracing.
   */
  readonly lane?: (options: LaneOptions) => StreamLane;
}

const { executeCommand } = SafeEdgeGatewayServiceDefinition.methods;
/** The HTTP/2 path of ExecuteCommand. */
const EXECUTE_COMMAND_PATH = `/${SafeEdgeGatewayServiceDefinition.fullName}/${executeCommand.name}`;

/** The handlers behind `edgegateway.v1.EdgeGatewayService`. */
export interface GatewayMethods {
  readonly executeCommand: ReturnType<typeof createExecuteCommandHandler>;
  /** What SubscribeEvents' push sessions need, on either path. */
  readonly pushSession: PushSessionDeps;
  readonly health: GrpcHealth;
  readonly logger: Logger;
}

/**
 * The services of the gRPC listener: the edge gateway service (requests that
 * do not decode become INVALID_ARGUMENT) and `grpc.health.v1.Health`.
 */
export function gatewayServices(methods: GatewayMethods): readonly GrpcService[] {
  const edgeGateway: ServiceImplementation<typeof SafeEdgeGatewayServiceDefinition> = {
    executeCommand: (request, context) => {
      const traceHeaders = traceHeadersOnce();
      return methods.executeCommand(request, {
        signal: context.signal,
        deadline: deadlineOf(context),
        logger: methods.logger,
        get traceHeaders() {
          return traceHeaders();
        },
      });
    },
    subscribeEvents: createSubscribeEventsMethod(methods.pushSession),
  };
  // One writer for every response: its buffer grows once and is reused, where a
  // writer per call allocated a 128-byte buffer, grew it to 512 bytes and sliced
  // the result, three ArrayBuffers that each scavenge then had to sweep; the
  // bytes go from it straight into the response's frame.
  const responseWriter = new BinaryWriter();
  return [
    {
      definition: SafeEdgeGatewayServiceDefinition,
      implementation: edgeGateway,
      gated: true,
      lane: (options) =>
        combineLanes([
          createDirectUnaryLane(
            [
              {
                path: EXECUTE_COMMAND_PATH,
                decode: (bytes) => executeCommand.requestType.decode(bytes),
                frame: (response: ExecuteCommandResponse) =>
                  frameWith(responseWriter, () =>
                    executeCommand.responseType.encode(response, responseWriter),
                  ),
                handle: methods.executeCommand,
              },
            ],
            options,
          ),
          createPushLane(methods.pushSession, options),
        ]),
    },
    {
      definition: methods.health.definition,
      implementation: methods.health.implementation,
      gated: false,
    },
  ];
}
