/**
 * The one place where failures become HTTP responses: domain errors carry their status and
 * code; framework errors (validation, parse, unknown route) are translated here; anything else
 * is a bug, answered 500 and logged.
 */
import { AppError } from "../errors.ts";

/** The request body is not valid JSON. */
export class MalformedJsonError extends AppError {
  readonly status = 400;
  readonly code = "MALFORMED_JSON";
}

/**
 * A body refused before it was read to its end: the connection is closed after the answer, or
 * the listener would go on reading (and discarding) whatever the client keeps sending.
 */
export abstract class BodyRefusedError extends AppError {}

/** The request body is larger than the API accepts. */
export class PayloadTooLargeError extends BodyRefusedError {
  readonly status = 413;
  readonly code = "PAYLOAD_TOO_LARGE";
}

/** The request body did not arrive whole within its deadline (a slow or stalled client). */
export class RequestTimeoutError extends BodyRefusedError {
  readonly status = 408;
  readonly code = "REQUEST_TIMEOUT";
}

/** A body, path parameter or query string that fails its schema. */
export class RequestValidationError extends AppError {
  constructor(
    message: string,
    readonly status: 400 | 422,
  ) {
    super(message);
  }
  readonly code = "VALIDATION";
}

export interface ErrorBody {
  readonly error: string;
  readonly code: string;
}

export function errorResponse(status: number, body: ErrorBody, headers?: Record<string, string>): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

interface ElysiaValidationFailure {
  type?: string;
  valueError?: { path: string; message: string; value: unknown; schema: { description?: string } };
}

/** 422 for a body that parsed but does not fit its schema (as the original's JSON extractor); 400 otherwise. */
function validationResponse(failure: ElysiaValidationFailure): Response {
  const detail = failure.valueError;
  const where = `${failure.type ?? "request"}${detail?.path.replaceAll("/", ".") ?? ""}`;
  const expected =
    detail === undefined
      ? "is invalid"
      : detail.value !== undefined && detail.schema.description
        ? `must be ${detail.schema.description}`
        : detail.message.toLowerCase();
  return errorResponse(failure.type === "body" ? 422 : 400, { error: `${where}: ${expected}`, code: "VALIDATION" });
}

/** Maps an Elysia lifecycle error to a response; `internal` reports errors that are bugs. */
export function toErrorResponse(code: string | number, error: unknown, internal: (error: unknown) => void): Response {
  // Elysia wraps whatever the body parser throws in a ParseError; ours are domain errors.
  if (code === "PARSE" && (error as Error).cause instanceof AppError) {
    return toErrorResponse("", (error as Error).cause, internal);
  }
  if (error instanceof AppError) {
    const headers = error instanceof BodyRefusedError ? { connection: "close" } : undefined;
    return errorResponse(error.status, { error: error.message, code: error.code }, headers);
  }
  if (code === "VALIDATION") {
    return validationResponse(error as ElysiaValidationFailure);
  }
  if (code === "PARSE") return errorResponse(400, { error: "request body is not valid JSON", code: "MALFORMED_JSON" });
  if (code === "NOT_FOUND") return errorResponse(404, { error: "no such route", code: "ROUTE_NOT_FOUND" });
  internal(error);
  return errorResponse(500, { error: "internal error", code: "INTERNAL" });
}
