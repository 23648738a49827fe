/**
 * The reflection services themselves, loaded by `reflection.ts` on the first
 * reflection call: `@grpc/reflection` and the parsed descriptors cost about
 * 10 MiB of memory that most gateways never use.
 */
import type { EventEmitter } from "node:events";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import type { ServiceDefinition as GrpcJsServiceDefinition } from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";

/** A grpc-js duplex call, as far as the reflection handlers use it. */
export interface DuplexCall extends EventEmitter {
  write(message: unknown): boolean;
  end(): void;
  getPeer(): string;
}

/** One reflection method as `@grpc/reflection` serves it on grpc-js. */
export interface ReflectionMethod {
  readonly handler: (call: DuplexCall) => void;
  readonly requestDeserialize: (bytes: Buffer) => unknown;
  readonly responseSerialize: (message: unknown) => Buffer;
}

/**
 * The reflection methods by HTTP/2 path, describing the files of
 * `descriptorSet` (a serialized `FileDescriptorSet`) and the health service.
 */
export function loadReflectionMethods(descriptorSet: Uint8Array): Map<string, ReflectionMethod> {
  const set = fromBinary(FileDescriptorSetSchema, descriptorSet);
  const files = [
    ...set.file.map((file) => toBinary(FileDescriptorProtoSchema, file)),
    healthFile(),
  ];
  const methods = new Map<string, ReflectionMethod>();
  new ReflectionService(asPackageDefinition(files)).addToServer({
    addService(service: GrpcJsServiceDefinition, implementation: object) {
      const handlers = implementation as Record<string, ReflectionMethod["handler"] | undefined>;
      for (const [name, method] of Object.entries(service)) {
        const handler = handlers[name];
        if (!method.requestStream || !method.responseStream || handler === undefined) {
          throw new Error(`gRPC reflection: cannot adapt ${method.path}`);
        }
        methods.set(method.path, {
          handler,
          requestDeserialize: method.requestDeserialize,
          responseSerialize: method.responseSerialize,
        });
      }
    },
  });
  return methods;
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

/**
 * `grpc/health/v1/health.proto` as nice-grpc-server-health serves it
 * (`Check` and `Watch`); the package ships no descriptor of its own.
 */
function healthFile(): Uint8Array {
  return toBinary(
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
}
