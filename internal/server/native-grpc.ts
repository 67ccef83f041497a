import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  type Message,
  toBinary,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  createServiceImplSpec,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type ServiceImpl,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import { transformInvokeImplementation } from "@connectrpc/connect/protocol";
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
 * frames and (de)serialises with protobuf-es; the interceptor chain and the
 * handler run as connect runs them (its invoke function for streams, a copy
 * of it for unary calls, see invokeUnary). Measured on this machine, a
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
  /** The calls in progress: aborted together on shutdown. */
  private readonly calls = new Set<CallAbort>();
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
    // One listener for all calls, rather than one per call on the shared signal.
    options.shutdownSignal.addEventListener("abort", () => this.abortCalls(options.shutdownSignal.reason), {
      once: true,
    });
  }

  /** Calls that have started and not yet ended (each leaves the set when it ends, however it ends). */
  get callsInProgress(): number {
    return this.calls.size;
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
    const method = { service, method: spec.method, url: `/${service.typeName}/${spec.method.name}` };
    switch (spec.kind) {
      case "unary":
        return (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          const context = this.context(method, call);
          invokeUnary(spec, context, call.request as Message, interceptors)
            .then(
              (response) => {
                let trailer: grpc.Metadata | undefined;
                try {
                  sendResponseHeader(call, context.responseHeader);
                  trailer = toMetadata(context.responseTrailer);
                } catch (err) {
                  // A header value grpc-js cannot send (Headers takes more than gRPC
                  // metadata does): the call still gets an answer.
                  callback(toServiceError(err));
                  return;
                }
                callback(null, response, trailer);
              },
              (err: unknown) => callback(toServiceError(err)),
            )
            .finally(context.end);
        };
      case "server_streaming":
      case "bidi_streaming":
        return (call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>) => {
          const context = this.context(method, call);
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
              // Cancelled, past its deadline or shut down: nobody reads what the
              // handler would yield next. Throwing ends its generator (its finally
              // runs, e.g. the health Watch gives back its watcher slot).
              if (context.signal.aborted) throw context.signal.reason;
            }
            call.end(toMetadata(context.responseTrailer));
          };
          run()
            .catch((err: unknown) => call.emit("error", toServiceError(err)))
            .finally(context.end);
        };
      default:
        // Client streaming: no such method in these services; grpc-js answers UNIMPLEMENTED.
        return () => {
          throw new Error(`unsupported method kind ${spec.kind}`);
        };
    }
  }

  /**
   * The handler context of one call, built here rather than by connect's
   * createHandlerContext, which per call copied the request headers and made
   * two AbortControllers (one for the deadline, one linked to it, to the
   * shutdown signal and to the request) with a listener on each. An
   * AbortSignal costs Node 20 microseconds to make and to abort (an event per
   * abort), and a unary create never reads its signal: the signal is made
   * only when read (CallAbort), and aborted, with the reasons connect gives,
   * on client cancel, at the deadline, on shutdown (through the set of calls
   * in progress) and when the call has ended.
   */
  private context(
    { service, method, url }: { service: DescService; method: DescMethod; url: string },
    call:
      | grpc.ServerUnaryCall<unknown, unknown>
      | grpc.ServerWritableStream<unknown, unknown>
      | grpc.ServerDuplexStream<unknown, unknown>,
  ): CallContext {
    const deadline = call.getDeadline();
    const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
    const abort = new CallAbort(deadlineMs);
    const calls = this.calls;
    const shutdown = this.options.shutdownSignal;
    if (shutdown.aborted) abort.abort(shutdown.reason);
    else calls.add(abort);
    (call as NodeJS.EventEmitter).on("cancelled", () => abort.abort(clientCancelled));
    return {
      service,
      method,
      protocolName: "grpc",
      requestMethod: "POST",
      url,
      get signal() {
        return abort.signal;
      },
      timeoutMs: Number.isFinite(deadlineMs) ? () => deadlineMs - Date.now() : noTimeout,
      requestHeader: requestHeader(call.metadata),
      responseHeader: new Headers(),
      responseTrailer: new Headers(),
      values: createContextValues(),
      end: () => {
        calls.delete(abort);
        abort.abort(callEnded);
      },
    };
  }

  private abortCalls(reason: unknown): void {
    for (const abort of this.calls) abort.abort(reason);
    this.calls.clear();
  }
}

/** A call's handler context, and how to end it once the call is over. */
interface CallContext extends HandlerContext {
  /** Leaves the set of calls in progress and aborts the signal. */
  end(): void;
}

const noTimeout = () => undefined;

/**
 * A call's abort signal, made when first read: aborted at once if the call
 * was aborted before, and from then on at the deadline (its timer is set only
 * then) or by the next abort. Unread, an abort only records its reason.
 */
class CallAbort {
  private controller: AbortController | undefined;
  private aborted = false;
  private reason: unknown;
  private timer: NodeJS.Timeout | undefined;

  /** `deadlineMs`: the client's deadline (epoch ms), Infinity without one. */
  constructor(private readonly deadlineMs: number) {}

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
      else if (Number.isFinite(this.deadlineMs)) {
        const remaining = this.deadlineMs - Date.now();
        if (remaining <= 0) this.abort(deadlineExceeded);
        else this.timer = setTimeout(() => this.abort(deadlineExceeded), remaining);
      }
    }
    return this.controller.signal;
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    clearTimeout(this.timer);
    this.controller?.abort(reason);
  }
}

type UnarySpec = Extract<MethodImplSpec, { kind: "unary" }>;

/**
 * connect's invokeUnaryImplementation, except that the request and the
 * handler's context read the call's signal only when they themselves are
 * read (connect's copies it into both, which would make every call's signal).
 * An interceptor that passes on a request of its own gives the handler that
 * request's header, signal and values, as in connect.
 */
async function invokeUnary(
  spec: UnarySpec,
  context: CallContext,
  input: Message,
  interceptors: readonly Interceptor[],
): Promise<Message> {
  const { method } = spec;
  const service = method.parent;
  const request: UnaryRequest = {
    stream: false,
    message: input as never,
    method,
    service,
    requestMethod: context.requestMethod,
    url: context.url,
    get signal() {
      return context.signal;
    },
    header: context.requestHeader,
    contextValues: context.values,
  };
  let next = async (req: UnaryRequest): Promise<UnaryResponse> => {
    const handlerContext: HandlerContext =
      req === request
        ? context
        : {
            ...context,
            service: req.service,
            requestHeader: req.header,
            signal: req.signal,
            values: req.contextValues,
          };
    const output = await spec.impl(req.message, handlerContext);
    return {
      stream: false,
      message: create(method.output, output),
      method,
      service,
      header: context.responseHeader,
      trailer: context.responseTrailer,
    };
  };
  for (let i = interceptors.length - 1; i >= 0; i--) next = interceptors[i]!(next as never) as typeof next;
  const { message, header, trailer } = await next(request);
  copyHeaders(header, context.responseHeader);
  copyHeaders(trailer, context.responseTrailer);
  return message;
}

/** An interceptor may answer with headers of its own: they replace the context's (as connect does). */
function copyHeaders(from: Headers, to: Headers): void {
  if (from === to) return;
  for (const key of [...to.keys()]) to.delete(key);
  for (const [key, value] of from) to.set(key, value);
}

/** The request metadata as connect's request header: `-bin` values base64, as on the wire. */
function requestHeader(metadata: grpc.Metadata): Headers {
  const header = new Headers();
  for (const [name, value] of Object.entries(metadata.toHttp2Headers())) {
    if (Array.isArray(value)) for (const v of value) header.append(name, v);
    else if (value !== undefined) header.append(name, String(value));
  }
  return header;
}

// Abort reasons made once: aborting without a reason builds a DOMException
// (a stack trace) per call, measured at ~2% of the server's CPU per create.
// The signal is aborted when a call ends, as connect-node does, for whatever
// work a handler left listening to it.
const clientCancelled = new ConnectError("the client cancelled the call", Code.Canceled);
const callEnded = new ConnectError("the call has ended", Code.Canceled);
// connect's own deadline reason (createDeadlineSignal).
const deadlineExceeded = new ConnectError("the operation timed out", Code.DeadlineExceeded);

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
  // A cancelled call's writes all return false and it never drains: an abort
  // that came first must not be waited for.
  if (signal.aborted) return Promise.resolve();
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
  let metadata: grpc.Metadata | undefined;
  try {
    metadata = toMetadata(trailer);
  } catch {
    // The error's metadata holds a value gRPC metadata cannot carry: the
    // client gets Internal, saying so, rather than no answer at all.
    return { code: grpc.status.INTERNAL, details: "the error's metadata cannot be sent as gRPC metadata" };
  }
  return {
    code: connectError.code as number as grpc.status,
    details: connectError.rawMessage,
    ...(metadata ? { metadata } : {}),
  };
}
