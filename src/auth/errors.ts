import { AppError } from "../errors.ts";

/** No API key, or one that belongs to no project. */
export class UnauthorizedError extends AppError {
  readonly status = 401;
  readonly code = "UNAUTHORIZED";
}
