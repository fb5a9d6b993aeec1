import { AppError } from "../errors.ts";

/** A listener could not be set up (port taken, another daemon on the socket, …). */
export class ListenError extends AppError {
  readonly status = 500;
  readonly code = "LISTEN_FAILED";
}
