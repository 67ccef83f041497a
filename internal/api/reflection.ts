import {
  create,
  type DescFile,
  type DescService,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "../../pkg/grpc/reflection/v1/reflection_pb.js";
import {
  type ServerReflection as ServerReflectionV1Alpha,
  ServerReflectionRequestSchema as V1AlphaRequestSchema,
  ServerReflectionResponseSchema as V1AlphaResponseSchema,
} from "../../pkg/grpc/reflection/v1alpha/reflection_pb.js";

// gRPC status codes used inside reflection's own error_response.
const notFound = 5;
const unimplemented = 12;

/**
 * grpc.reflection.v1, so that grpcurl and Postman can discover the API without
 * the .proto files. Answers from the descriptors embedded in the generated
 * code; a file is sent together with everything it imports, so one answer is
 * enough for a client to build the types.
 */
export function reflectionHandlers(services: readonly DescService[]): ServiceImpl<typeof ServerReflection> {
  const index = buildIndex(services);
  return {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) yield answer(index, req);
    },
  };
}

interface Index {
  serviceNames: string[];
  filesByName: Map<string, DescFile>;
  filesBySymbol: Map<string, DescFile>;
  /** extendee type name → extension field numbers and their file */
  extensions: Map<string, Map<number, DescFile>>;
}

function buildIndex(services: readonly DescService[]): Index {
  const index: Index = {
    serviceNames: services.map((s) => s.typeName),
    filesByName: new Map(),
    filesBySymbol: new Map(),
    extensions: new Map(),
  };
  const visit = (file: DescFile) => {
    if (index.filesByName.has(file.proto.name)) return;
    index.filesByName.set(file.proto.name, file);
    for (const type of nestedTypes(file)) {
      index.filesBySymbol.set(type.typeName, file);
      if (type.kind === "service") {
        for (const method of type.methods) index.filesBySymbol.set(`${type.typeName}.${method.name}`, file);
      }
      if (type.kind === "extension") {
        const numbers = index.extensions.get(type.extendee.typeName) ?? new Map<number, DescFile>();
        numbers.set(type.number, file);
        index.extensions.set(type.extendee.typeName, numbers);
      }
    }
    file.dependencies.forEach(visit);
  };
  for (const s of services) visit(s.file);
  return index;
}

type ResponseInit = MessageInitShape<typeof ServerReflectionResponseSchema>["messageResponse"];

function answer(index: Index, req: ServerReflectionRequest): ServerReflectionResponse {
  return create(ServerReflectionResponseSchema, {
    validHost: req.host,
    originalRequest: req,
    messageResponse: respond(index, req),
  });
}

function respond(index: Index, req: ServerReflectionRequest): ResponseInit {
  const error = (code: number, message: string): ResponseInit => ({
    case: "errorResponse",
    value: { errorCode: code, errorMessage: message },
  });
  const files = (file: DescFile | undefined, what: string): ResponseInit =>
    file === undefined
      ? error(notFound, `${what} not found`)
      : { case: "fileDescriptorResponse", value: { fileDescriptorProto: withDependencies(file) } };
  const request = req.messageRequest;
  switch (request.case) {
    case "listServices":
      return { case: "listServicesResponse", value: { service: index.serviceNames.map((name) => ({ name })) } };
    case "fileByFilename":
      return files(index.filesByName.get(request.value), `file ${request.value}`);
    case "fileContainingSymbol":
      return files(index.filesBySymbol.get(request.value), `symbol ${request.value}`);
    case "fileContainingExtension": {
      const { containingType, extensionNumber } = request.value;
      return files(
        index.extensions.get(containingType)?.get(extensionNumber),
        `extension ${extensionNumber} of ${containingType}`,
      );
    }
    case "allExtensionNumbersOfType": {
      if (!index.filesBySymbol.has(request.value)) return error(notFound, `type ${request.value} not found`);
      const numbers = index.extensions.get(request.value);
      return {
        case: "allExtensionNumbersResponse",
        value: { baseTypeName: request.value, extensionNumber: [...(numbers?.keys() ?? [])] },
      };
    }
    default:
      return error(unimplemented, "unsupported reflection request");
  }
}

function withDependencies(file: DescFile): Uint8Array[] {
  const out: Uint8Array[] = [];
  const seen = new Set<string>();
  const visit = (f: DescFile) => {
    if (seen.has(f.proto.name)) return;
    seen.add(f.proto.name);
    out.push(toBinary(FileDescriptorProtoSchema, f.proto));
    f.dependencies.forEach(visit);
  };
  visit(file);
  return out;
}

/**
 * grpc.reflection.v1alpha, which older tools (grpcurl before 1.8.8, some IDE
 * plugins) still ask for. It is v1 under another package name, with the same
 * fields and numbers, so each message crosses over through its wire form.
 */
export function reflectionV1AlphaHandlers(
  services: readonly DescService[],
): ServiceImpl<typeof ServerReflectionV1Alpha> {
  const v1 = reflectionHandlers(services);
  return {
    async *serverReflectionInfo(requests, context) {
      async function* asV1() {
        for await (const req of requests)
          yield fromBinary(ServerReflectionRequestSchema, toBinary(V1AlphaRequestSchema, req));
      }
      for await (const res of v1.serverReflectionInfo(asV1(), context)) {
        yield fromBinary(
          V1AlphaResponseSchema,
          toBinary(ServerReflectionResponseSchema, create(ServerReflectionResponseSchema, res)),
        );
      }
    },
  };
}
