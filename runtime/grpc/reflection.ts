/**
 * gRPC server reflection (`grpc.reflection.v1` and `v1alpha`) on a nice-grpc
 * server, describing `edgegateway.v1.EdgeGatewayService` and
 * `grpc.health.v1.Health`, so `grpcurl` and `buf curl` work without the proto
 * files.
 *
 * `@grpc/reflection` only knows how to add itself to a grpc-js server; the
 * shim here hands it an object with grpc-js's `addService` that adds the
 * service to nice-grpc instead, adapting its grpc-js duplex handlers.
 */
import { EventEmitter } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import type { ServiceDefinition as GrpcJsServiceDefinition } from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import type { CallContext, ServerAddBuilder } from "nice-grpc";

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
 * health service.
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
  const files = [...readDescriptorSet(options.descriptorSetPath), HEALTH_FILE];
  const reflection = new ReflectionService(asPackageDefinition(files));
  reflection.addToServer({
    addService(service: GrpcJsServiceDefinition, implementation: object) {
      // An untyped grpc-js definition gives nice-grpc no method types to check against.
      server.add(service, toNiceGrpcImplementation(service, implementation) as never);
    },
  });
}

/** The serialized `FileDescriptorProto`s of a `FileDescriptorSet` file. */
function readDescriptorSet(path?: string): Uint8Array[] {
  const found = path ?? DESCRIPTOR_SET_CANDIDATES.find((candidate) => existsSync(candidate));
  if (found === undefined) {
    throw new Error(
      `gRPC reflection: no descriptor set at ${DESCRIPTOR_SET_CANDIDATES.join(" or ")}`,
    );
  }
  const set = fromBinary(FileDescriptorSetSchema, readFileSync(found));
  return set.file.map((file) => toBinary(FileDescriptorProtoSchema, file));
}

/**
 * `ReflectionService` reads only `fileDescriptorProtos` from the package
 * definition it is given. Passing the files as they are keeps their names and
 * contents exact (`@grpc/proto-loader` would rename them after their package).
 */
function asPackageDefinition(
  files: Uint8Array[],
): ConstructorParameters<typeof ReflectionService>[0] {
  const fileDescriptorProtos = files.map((file) => Buffer.from(file));
  return { files: { fileDescriptorProtos } } as unknown as ConstructorParameters<
    typeof ReflectionService
  >[0];
}

/** A grpc-js duplex call, as far as the reflection handlers use it. */
interface DuplexCall extends EventEmitter {
  write(message: unknown): boolean;
  end(): void;
  getPeer(): string;
}

type DuplexHandler = (call: DuplexCall) => void;

type BidiImplementation = (
  requests: AsyncIterable<unknown>,
  context: CallContext,
) => AsyncGenerator<unknown, void, undefined>;

function toNiceGrpcImplementation(
  service: GrpcJsServiceDefinition,
  implementation: object,
): Record<string, BidiImplementation> {
  const handlers = implementation as Record<string, DuplexHandler | undefined>;
  const adapted: Record<string, BidiImplementation> = {};
  for (const [name, method] of Object.entries(service)) {
    const handler = handlers[name];
    if (!method.requestStream || !method.responseStream || handler === undefined) {
      throw new Error(`gRPC reflection: cannot adapt ${method.path}`);
    }
    adapted[name] = fromDuplexHandler(handler);
  }
  return adapted;
}

/**
 * A nice-grpc bidirectional method running a grpc-js duplex handler: each
 * request is emitted as `data` (then `end`), and what the handler writes is
 * streamed back until it calls `end()`.
 */
function fromDuplexHandler(handler: DuplexHandler): BidiImplementation {
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
    handler(call);

    const reading = (async () => {
      for await (const request of requests) call.emit("data", request);
      call.emit("end");
    })().catch((error: unknown) => {
      failure = { error };
      notify();
    });

    while (true) {
      const next = written.shift();
      if (next !== undefined) {
        yield next;
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

/**
 * `grpc/health/v1/health.proto` as nice-grpc-server-health serves it
 * (`Check` and `Watch`); the package ships no descriptor of its own.
 */
const HEALTH_FILE = toBinary(
  FileDescriptorProtoSchema,
  create(FileDescriptorProtoSchema, {
    name: "grpc/health/v1/health.proto",
    package: "grpc.health.v1",
    syntax: "proto3",
    messageType: [
      {
        name: "HealthCheckRequest",
        field: [
          {
            name: "service",
            number: 1,
            label: FieldDescriptorProto_Label.OPTIONAL,
            type: FieldDescriptorProto_Type.STRING,
            jsonName: "service",
          },
        ],
      },
      {
        name: "HealthCheckResponse",
        field: [
          {
            name: "status",
            number: 1,
            label: FieldDescriptorProto_Label.OPTIONAL,
            type: FieldDescriptorProto_Type.ENUM,
            typeName: ".grpc.health.v1.HealthCheckResponse.ServingStatus",
            jsonName: "status",
          },
        ],
        enumType: [
          {
            name: "ServingStatus",
            value: [
              { name: "UNKNOWN", number: 0 },
              { name: "SERVING", number: 1 },
              { name: "NOT_SERVING", number: 2 },
              { name: "SERVICE_UNKNOWN", number: 3 },
            ],
          },
        ],
      },
    ],
    service: [
      {
        name: "Health",
        method: [
          {
            name: "Check",
            inputType: ".grpc.health.v1.HealthCheckRequest",
            outputType: ".grpc.health.v1.HealthCheckResponse",
          },
          {
            name: "Watch",
            inputType: ".grpc.health.v1.HealthCheckRequest",
            outputType: ".grpc.health.v1.HealthCheckResponse",
            serverStreaming: true,
          },
        ],
      },
    ],
  }),
);
