/**
 * The domain's error family. Repositories and services throw these; the API
 * edge (api/interceptors.ts) maps each to one gRPC code, and anything else
 * becomes Internal with a generic message.
 */
export abstract class DomainError extends Error {
  abstract readonly kind: "not_found" | "invalid_argument" | "already_exists" | "unavailable";

  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    // The subclass's name (NotFoundError, …) in logs and stack traces.
    this.name = new.target.name;
  }
}

export class NotFoundError extends DomainError {
  readonly kind = "not_found";
}

export class InvalidArgumentError extends DomainError {
  readonly kind = "invalid_argument";

  /** `field`: the request field the message is about; clients get it as a google.rpc.BadRequest detail. */
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

export class AlreadyExistsError extends DomainError {
  readonly kind = "already_exists";
}

/** A dependency (the database) cannot be reached now; a retry may succeed. */
export class UnavailableError extends DomainError {
  readonly kind = "unavailable";
}

export const packageNotFound = () => new NotFoundError("package not found");
