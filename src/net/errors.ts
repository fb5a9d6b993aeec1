import { AppError } from "../errors.ts";

/** A string that is not a dotted-quad IPv4 address, or an address outside what was expected. */
export class InvalidIpError extends AppError {
  readonly status = 400;
  readonly code = "INVALID_IP";
}
