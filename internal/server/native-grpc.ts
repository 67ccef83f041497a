import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { type DescMessage, type DescMethod, type DescService, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  createHandlerContext,
  createServiceImplSpec,
  type Interceptor,
  type MethodImplSpec,
  type ServiceImpl,
} from "@connectrpc/connect";
import { invokeUnaryImplementation, transformInvokeImplementation } from "@connectrpc/connect/protocol";
import { headerGrpcMessage, headerGrpcStatus, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import * as grpc from "@grpc/grpc-js";

/** A service and its connect implementation, served on every protocol. */
export interface ServiceBinding {
  service: DescService;
  impl: Partial<ServiceImpl<DescService>>;
}

/** A binding with the implementation's type checked against its service. */
export function serviceBinding<S extends DescService>(service: S, impl: ServiceImpl<S>): ServiceBinding {
  return { service, impl: impl as unknown as ServiceBinding["impl"] };
}

export interface NativeGrpcOptions {
  /** The same interceptors as the connect router: logging, metrics, tracing, auth. */
  interceptors: Interceptor[];
  maxRequestBytes: number;
  /** Aborts every handler's signal on shutdown, like connect-node's shutdownSignal. */
  shutdownSignal: AbortSignal;
}

/**
 * Native gRPC (`application/grpc` over HTTP/2) served by @grpc/grpc-js, with
 * the connect implementations and interceptors run unchanged: grpc-js parses
 * frames and (de)serialises with protobuf-es, connect's own invoke functions
 * run the interceptor chain and the handler. Measured on this machine, a
 * trivial unary call costs grpc-js about a third of what connect-node's
 * HTTP/2 path costs, and native gRPC is what service-to-service clients speak.
 *
 * grpc-js owns no socket here: `handleStream` takes the HTTP/2 streams that
 * the API listener routes to it by content type, so one port serves native
 * gRPC through grpc-js and Connect / gRPC-Web through connect-node. grpc-js
 * has no public API for a stream accepted elsewhere (only whole connections,
 * through its connection injector); its stream handler is used directly, and
 * checked at start so that a grpc-js upgrade that renames it fails loudly.
 */
export class NativeGrpcServer {
  private readonly server: grpc.Server;
  private readonly streamHandler: (
    extraInterceptors: unknown[],
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
  ) => void;

  constructor(
    bindings: readonly ServiceBinding[],
    private readonly options: NativeGrpcOptions,
  ) {
    this.server = new grpc.Server({
      "grpc.max_receive_message_length": options.maxRequestBytes,
      "grpc.max_send_message_length": -1,
    });
    for (const { service, impl } of bindings) {
      const spec = createServiceImplSpec(service, impl as ServiceImpl<DescService>);
      const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
      const handlers: grpc.UntypedServiceImplementation = {};
      for (const method of service.methods) {
        const methodSpec = spec.methods[method.localName];
        if (methodSpec === undefined) continue;
        definition[method.localName] = methodDefinition(service, method);
        handlers[method.localName] = this.handler(service, methodSpec);
      }
      this.server.addService(definition, handlers);
    }
    const handler = (this.server as unknown as { _streamHandler?: unknown })._streamHandler;
    if (typeof handler !== "function") {
      throw new Error(
        "@grpc/grpc-js has no Server._streamHandler: keep the version pinned in package.json, or adapt internal/server/native-grpc.ts",
      );
    }
    this.streamHandler = handler.bind(this.server) as typeof this.streamHandler;
  }

  /** True for the streams this server answers: native gRPC with protobuf (not gRPC-Web, not JSON). */
  static accepts(headers: IncomingHttpHeaders): boolean {
    const type = headers["content-type"];
    return type === "application/grpc" || type === "application/grpc+proto";
  }

  handleStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    this.streamHandler([], stream, headers);
  }

  private handler(service: DescService, spec: MethodImplSpec): grpc.UntypedHandleCall {
    const { interceptors } = this.options;
    switch (spec.kind) {
      case "unary":
        return (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          const context = this.context(service, spec.method, call);
          invokeUnaryImplementation(spec, context, call.request as never, interceptors)
            .then(
              (response) => {
                sendResponseHeader(call, context.responseHeader);
                callback(null, response, toMetadata(context.responseTrailer));
              },
              (err: unknown) => callback(toServiceError(err)),
            )
            .finally(() => context.abort(callEnded));
        };
      case "server_streaming":
      case "bidi_streaming":
        return (call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>) => {
          const context = this.context(service, spec.method, call);
          // A duplex's own async iterator destroys it when the input ends,
          // which would also end the output before the responses are written.
          const input: AsyncIterable<unknown> =
            spec.kind === "server_streaming"
              ? single((call as grpc.ServerWritableStream<unknown, unknown>).request)
              : (call as grpc.ServerDuplexStream<unknown, unknown>).iterator({ destroyOnReturn: false });
          const run = async () => {
            const output = transformInvokeImplementation(
              spec as MethodImplSpec<DescMessage, DescMessage>,
              context,
              interceptors,
            )(input as AsyncIterable<never>);
            let headerSent = false;
            for await (const message of output) {
              if (!headerSent) {
                sendResponseHeader(call, context.responseHeader);
                headerSent = true;
              }
              if (!call.write(message)) await drained(call, context.signal);
            }
          };
          run()
            .then(
              () => call.end(toMetadata(context.responseTrailer)),
              (err: unknown) => call.emit("error", toServiceError(err)),
            )
            .finally(() => context.abort(callEnded));
        };
      default:
        // Client streaming: no such method in these services; grpc-js answers UNIMPLEMENTED.
        return () => {
          throw new Error(`unsupported method kind ${spec.kind}`);
        };
    }
  }

  private context(
    service: DescService,
    method: DescMethod,
    call:
      | grpc.ServerUnaryCall<unknown, unknown>
      | grpc.ServerWritableStream<unknown, unknown>
      | grpc.ServerDuplexStream<unknown, unknown>,
  ) {
    const deadline = call.getDeadline();
    const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
    const header = new Headers();
    for (const [name, value] of Object.entries(call.metadata.toHttp2Headers())) {
      for (const v of Array.isArray(value) ? value : [value]) if (v !== undefined) header.append(name, String(v));
    }
    const context = createHandlerContext({
      service,
      method,
      protocolName: "grpc",
      requestMethod: "POST",
      url: `/${service.typeName}/${method.name}`,
      ...(Number.isFinite(deadlineMs) ? { timeoutMs: Math.max(0, deadlineMs - Date.now()) } : {}),
      shutdownSignal: this.options.shutdownSignal,
      requestHeader: header,
      contextValues: createContextValues(),
    });
    (call as NodeJS.EventEmitter).once("cancelled", () => context.abort(clientCancelled));
    return context;
  }
}

// Abort reasons made once: aborting without a reason builds a DOMException
// (a stack trace) per call, measured at ~2% of the server's CPU per create.
// The context is aborted when a call ends, to unhook it from the shutdown signal.
const clientCancelled = new ConnectError("the client cancelled the call", Code.Canceled);
const callEnded = new ConnectError("the call has ended", Code.Canceled);

function methodDefinition(service: DescService, method: DescMethod): grpc.MethodDefinition<unknown, unknown> {
  return {
    path: `/${service.typeName}/${method.name}`,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: (message) => toBuffer(toBinary(method.input, message as never)),
    requestDeserialize: (bytes: Buffer) => fromBinary(method.input, bytes),
    responseSerialize: (message) => toBuffer(toBinary(method.output, message as never)),
    responseDeserialize: (bytes: Buffer) => fromBinary(method.output, bytes),
    originalName: method.localName,
  };
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

async function* single<T>(value: T): AsyncIterable<T> {
  yield value;
}

function drained(call: NodeJS.EventEmitter, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    call.once("drain", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

function toMetadata(headers: Headers): grpc.Metadata | undefined {
  let metadata: grpc.Metadata | undefined;
  headers.forEach((value, name) => {
    const target = (metadata ??= new grpc.Metadata());
    target.add(name, name.endsWith("-bin") ? Buffer.from(value, "base64") : value);
  });
  return metadata;
}

function sendResponseHeader(call: { sendMetadata(m: grpc.Metadata): void }, headers: Headers): void {
  const metadata = toMetadata(headers);
  if (metadata !== undefined) call.sendMetadata(metadata);
}

/**
 * The interceptors already turned every error into a ConnectError with the
 * client's code and message; anything else (an interceptor's own failure)
 * becomes Internal without detail. Connect's codes are gRPC's numbers. The
 * trailers are the ones connect-node writes for the same error (its
 * setTrailerStatus): the error's metadata and, when it has details (a
 * google.rpc.BadRequest), grpc-status-details-bin, a google.rpc.Status that
 * carries them. grpc-js writes grpc-status and grpc-message itself.
 */
function toServiceError(err: unknown): Partial<grpc.StatusObject> {
  const connectError =
    err instanceof ConnectError ? err : new ConnectError("internal error", Code.Internal, undefined, undefined, err);
  const trailer = setTrailerStatus(new Headers(), connectError);
  trailer.delete(headerGrpcStatus);
  trailer.delete(headerGrpcMessage);
  const metadata = toMetadata(trailer);
  return {
    code: connectError.code as number as grpc.status,
    details: connectError.rawMessage,
    ...(metadata ? { metadata } : {}),
  };
}
