import type { Interceptor } from "@connectrpc/connect";
import { Health } from "../../pkg/grpc/health/v1/health_pb.js";
import { ServerReflection } from "../../pkg/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1Alpha } from "../../pkg/grpc/reflection/v1alpha/reflection_pb.js";
import { LogisticPackageApiService } from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import { type AccessPolicy, type AuthDecision, authInterceptor, TokenTable } from "../api/auth.js";
import type { Config } from "../config/config.js";
import type { Logger } from "../logger/logger.js";
import type { ApiListener, TlsMaterial } from "../server/api-listener.js";
import { readTlsMaterial } from "../server/tls-files.js";

const api = LogisticPackageApiService.typeName;

/** Who may call what once AUTH_TOKENS_FILE is set. */
export const accessPolicy: AccessPolicy = {
  // Probes and load balancers check health without a token; it reveals only "serving".
  openServices: new Set([Health.typeName]),
  roles: {
    [`${api}/DescribePackageV1`]: "reader",
    [`${api}/ListPackagesV1`]: "reader",
    [`${api}/CreatePackageV1`]: "writer",
    [`${api}/UpdatePackageV1`]: "writer",
    [`${api}/RemovePackageV1`]: "admin",
    // Reflection lists the API's shape: any valid token, not anybody.
    [`${ServerReflection.typeName}/*`]: "reader",
    [`${ServerReflectionV1Alpha.typeName}/*`]: "reader",
  },
};

/**
 * TLS material and API tokens of the grpc-server: read at start (a bad file
 * stops start-up naming its key) and again on reload, where a bad file is
 * logged and the running server keeps what it had.
 */
export class ApiSecurity {
  private tokenTable: TokenTable | undefined;
  private tlsMaterial: TlsMaterial | undefined;

  constructor(
    private readonly config: Readonly<Config>,
    private readonly logger: Logger,
  ) {
    this.tlsMaterial = readTlsMaterial(config.tls);
    this.tokenTable = config.auth.tokensFile === "" ? undefined : TokenTable.fromFile(config.auth.tokensFile);
    if (this.tokenTable === undefined) {
      logger.warn(
        "the API is unauthenticated: anyone who reaches its ports can change and delete packages; set AUTH_TOKENS_FILE",
      );
    } else {
      logger.info({ tokens: this.tokenTable.size }, "API tokens loaded");
    }
    if (this.tlsMaterial === undefined)
      logger.info("API listeners are cleartext (set TLS_CERT_FILE and TLS_KEY_FILE for TLS)");
    else logger.info({ mutualTls: this.tlsMaterial.clientCa !== undefined }, "API listeners speak TLS");
  }

  get tls(): TlsMaterial | undefined {
    return this.tlsMaterial;
  }

  /** The auth interceptor, or undefined when the API is open. */
  interceptor(onDecision: (caller: string, decision: AuthDecision) => void): Interceptor | undefined {
    if (this.tokenTable === undefined) return undefined;
    return authInterceptor({ tokens: () => this.tokenTable!, policy: accessPolicy, onDecision });
  }

  /** Re-reads certificates and tokens (SIGHUP, or the certificate files changed). */
  reload(listeners: readonly ApiListener[]): void {
    if (this.tlsMaterial !== undefined) {
      try {
        const material = readTlsMaterial(this.config.tls)!;
        for (const listener of listeners) listener.reloadTls(material);
        this.tlsMaterial = material;
        this.logger.info("TLS certificates reloaded");
      } catch (err) {
        this.logger.error({ err }, "TLS reload failed: keeping the certificates in use");
      }
    }
    if (this.tokenTable !== undefined) {
      try {
        this.tokenTable = TokenTable.fromFile(this.config.auth.tokensFile);
        this.logger.info({ tokens: this.tokenTable.size }, "API tokens reloaded");
      } catch (err) {
        this.logger.error({ err }, "token reload failed: keeping the tokens in use");
      }
    }
  }
}
