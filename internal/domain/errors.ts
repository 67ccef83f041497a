/**
 * The domain's error family. Repositories and services throw these; the API
 * edge (api/interceptors.ts) maps each to one gRPC code, and anything else
 * becomes Internal with a generic message.
 */
export abstract class DomainError extends Error {
  abstract readonly kind: "not_found" | "invalid_argument" | "already_exists" | "unavailable";
}

export class NotFoundError extends DomainError {
  override name = "NotFoundError";
  readonly kind = "not_found";
}

export class InvalidArgumentError extends DomainError {
  override name = "InvalidArgumentError";
  readonly kind = "invalid_argument";
  /** The request field the message is about, for clients that want to point at it. */
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

export class AlreadyExistsError extends DomainError {
  override name = "AlreadyExistsError";
  readonly kind = "already_exists";
}

/** A dependency (the database) cannot be reached now; a retry may succeed. */
export class UnavailableError extends DomainError {
  override name = "UnavailableError";
  readonly kind = "unavailable";
}

export const packageNotFound = () => new NotFoundError("package not found");
