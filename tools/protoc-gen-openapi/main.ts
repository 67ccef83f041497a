import { create, createFileRegistry, type DescService } from "@bufbuild/protobuf";
import {
  type CodeGeneratorRequest,
  CodeGeneratorResponse_Feature,
  CodeGeneratorResponseSchema,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import { type Plugin, runNodeJs } from "@bufbuild/protoplugin";
import { buildOpenApi, openApiFileName } from "./openapi.js";

/**
 * protoc-gen-openapi: a protoc/buf plugin that writes one OpenAPI document
 * (`openapi.json`) for the REST routes of every service in the files to
 * generate (buf.gen.openapi.yaml runs it with `strategy: all`, so one request
 * sees every file). The Go generators (protoc-gen-openapiv2) are not
 * available on the build machines; this one describes our own gateway.
 */
const plugin: Plugin = {
  name: "protoc-gen-openapi",
  version: "v1",
  run(request: CodeGeneratorRequest) {
    const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: request.protoFile }));
    const services: DescService[] = [];
    for (const name of request.fileToGenerate) {
      const file = registry.getFile(name);
      if (file === undefined) throw new Error(`${name}: not in the request's descriptors`);
      services.push(...file.services);
    }
    const document = buildOpenApi(services);
    return create(CodeGeneratorResponseSchema, {
      supportedFeatures: BigInt(CodeGeneratorResponse_Feature.PROTO3_OPTIONAL),
      file: [{ name: openApiFileName, content: `${JSON.stringify(document, null, 2)}\n` }],
    });
  },
};

runNodeJs(plugin);
