/**
 * gRPC server reflection (`grpc.reflection.v1` and `v1alpha`) on a nice-grpc
 * server, describing `edgegateway.v1.EdgeGatewayService` and
 * `grpc.health.v1.Health`, so `grpcurl` and `buf curl` work without the proto
 * files.
 *
 * The services are mounted with pass-through codecs, and `@grpc/reflection`
 * (`reflection-service.ts`) is loaded on the first reflection call. It only
 * knows grpc-js servers: its duplex handlers are adapted to nice-grpc here,
 * decoding requests and encoding responses with its own codecs.
 */
import { EventEmitter } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { ServiceDefinition as GrpcJsServiceDefinition } from "@grpc/grpc-js";
import type { CallContext, ServerAddBuilder } from "nice-grpc";
import type { ReflectionMethod } from "./reflection-service.js";

/**
 * The edge gateway's compiled proto files (a `FileDescriptorSet`), written
 * next to the generated code by `buf build -o proto/gen/edge_gateway.binpb`.
 * Looked up from the source tree (`runtime/grpc/`) and from the build (`dist/runtime/grpc/`).
 */
const DESCRIPTOR_SET_CANDIDATES = [
  // From runtime/grpc/ in the sources, and from dist/runtime/grpc/ once built.
  "../../proto/gen/edge_gateway.binpb",
  "../../../proto/gen/edge_gateway.binpb",
].map((relative) => fileURLToPath(new URL(relative, import.meta.url)));

/** The HTTP/2 paths of the one method of each reflection service (v1, v1alpha). */
const REFLECTION_PATHS = [
  "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/** Options of {@link addGrpcReflection}. */
export interface GrpcReflectionOptions {
  /** Path of the `FileDescriptorSet` to describe; default the package's own. */
  readonly descriptorSetPath?: string;
}

/** Where reflection is added: a nice-grpc server, or `server.with(...)`'s builder. */
export type ReflectionTarget = Pick<ServerAddBuilder<object>, "add">;

/**
 * Adds the reflection services (v1 and v1alpha) to a nice-grpc server before
 * it listens. They describe the edge gateway's proto files and the standard
 * health service. The descriptor set is read now (a missing one throws);
 * it is parsed, and the reflection library loaded, on the first reflection
 * call, which fails if either fails.
 *
 * @example
 * const server = createServer(options);
 * server.add(EdgeGatewayServiceDefinition, implementation);
 * addGrpcReflection(server);
 * await server.listen("0.0.0.0:9090");
 */
export function addGrpcReflection(
  server: ReflectionTarget,
  options: GrpcReflectionOptions = {},
): void {
  const descriptorSet = readDescriptorSet(options.descriptorSetPath);
  let loading: Promise<Map<string, ReflectionMethod>> | undefined;
  const methods = () => {
    loading ??= import("./reflection-service.js").then((loaded) =>
      loaded.loadReflectionMethods(descriptorSet),
    );
    return loading;
  };
  for (const path of REFLECTION_PATHS) {
    // An untyped grpc-js definition gives nice-grpc no method types to check against.
    server.add(passThroughDefinition(path), {
      ServerReflectionInfo: async function* (
        requests: AsyncIterable<Buffer>,
        context: CallContext,
      ) {
        const method = (await methods()).get(path);
        if (method === undefined) throw new Error(`gRPC reflection: no method ${path}`);
        yield* fromDuplexHandler(method)(requests, context);
      },
    } as never);
  }
}

/** The bytes of a `FileDescriptorSet` file. */
function readDescriptorSet(path?: string): Buffer {
  const found = path ?? DESCRIPTOR_SET_CANDIDATES.find((candidate) => existsSync(candidate));
  if (found === undefined) {
    throw new Error(
      `gRPC reflection: no descriptor set at ${DESCRIPTOR_SET_CANDIDATES.join(" or ")}`,
    );
  }
  return readFileSync(found);
}

/** A bidirectional method at `path` whose messages stay bytes. */
function passThroughDefinition(path: string): GrpcJsServiceDefinition {
  const bytes = (value: Buffer) => value;
  return {
    ServerReflectionInfo: {
      path,
      requestStream: true,
      responseStream: true,
      requestSerialize: bytes,
      requestDeserialize: bytes,
      responseSerialize: bytes,
      responseDeserialize: bytes,
      originalName: "serverReflectionInfo",
    },
  };
}

type BidiImplementation = (
  requests: AsyncIterable<Buffer>,
  context: CallContext,
) => AsyncGenerator<Buffer, void, undefined>;

/**
 * A nice-grpc bidirectional method running a grpc-js duplex handler: each
 * request is decoded and emitted as `data` (then `end`), and what the
 * handler writes is encoded and streamed back until it calls `end()`.
 */
function fromDuplexHandler(method: ReflectionMethod): BidiImplementation {
  return async function* (requests, context) {
    const written: unknown[] = [];
    let ended = false;
    let failure: { error: unknown } | undefined;
    let wake: (() => void) | undefined;
    const notify = () => {
      wake?.();
      wake = undefined;
    };
    const call = Object.assign(new EventEmitter(), {
      write(message: unknown) {
        written.push(message);
        notify();
        return true;
      },
      end() {
        ended = true;
        notify();
      },
      getPeer: () => context.peer,
    });
    method.handler(call);

    const reading = (async () => {
      for await (const request of requests) {
        call.emit("data", method.requestDeserialize(request));
      }
      call.emit("end");
    })().catch((error: unknown) => {
      failure = { error };
      notify();
    });

    while (true) {
      const next = written.shift();
      if (next !== undefined) {
        yield method.responseSerialize(next);
        continue;
      }
      if (failure !== undefined) throw failure.error;
      if (ended) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
    await reading;
  };
}
