/**
 * The standard `grpc.health.v1.Health` service on the gRPC listener: SERVING
 * for the server (`""`) and for `edgegateway.v1.EdgeGatewayService` only while
 * the gateway is ready, NOT_SERVING before and once shutdown begins.
 */
import { ServerError } from "nice-grpc";
import { HealthDefinition, HealthServiceImpl, HealthState } from "nice-grpc-server-health";
import { grpcAnswerOf, OUTCOMES } from "../../handlers/errors.js";
import { EdgeGatewayServiceDefinition } from "../../proto/gen/edgegateway/v1/edge_gateway.js";

/** The services whose health the gateway reports. */
const SERVICES = ["", EdgeGatewayServiceDefinition.fullName] as const;

/** The gRPC health service and the switch the host turns. */
export interface GrpcHealth {
  /** `grpc.health.v1.Health`, for nice-grpc's `server.add`. */
  readonly definition: typeof HealthDefinition;
  /** Its implementation, for nice-grpc's `server.add`. */
  readonly implementation: HealthServiceImpl;
  /** Reports SERVING (`true`) or NOT_SERVING (`false`); open `Watch` streams see the change. */
  setServing(serving: boolean): void;
  /**
   * Ends every open `Watch` stream with `UNAVAILABLE`, and any opened later,
   * so a graceful server shutdown does not wait for them.
   */
  close(): void;
}

/**
 * Creates the gRPC health service, NOT_SERVING until `setServing(true)`.
 *
 * @example
 * const health = createGrpcHealth();
 * server.add(health.definition, health.implementation);
 * // once started:
 * health.setServing(true);
 * // when shutdown begins:
 * health.setServing(false);
 * health.close();
 */
export function createGrpcHealth(): GrpcHealth {
  const state = HealthState();
  // Every open Watch stream listens for changes.
  state.setMaxListeners(0);
  const setServing = (serving: boolean) => {
    for (const service of SERVICES) state.setStatus(serving ? "healthy" : "unhealthy", service);
  };
  setServing(false);

  const closing = new AbortController();
  const standard = HealthServiceImpl(state);
  const implementation: HealthServiceImpl = {
    check: (request, context) => standard.check(request, context),
    async *watch(request, context) {
      if (closing.signal.aborted) throw shuttingDown();
      const signal = AbortSignal.any([context.signal, closing.signal]);
      try {
        yield* standard.watch(request, { ...context, signal });
      } catch (error) {
        if (closing.signal.aborted && !context.signal.aborted) throw shuttingDown();
        throw error;
      }
    },
  };

  return {
    definition: HealthDefinition,
    implementation,
    setServing,
    close: () => closing.abort(),
  };
}

function shuttingDown(): ServerError {
  const { code, message } = grpcAnswerOf(OUTCOMES.shuttingDown);
  return new ServerError(code, message);
}
