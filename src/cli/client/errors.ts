import { AppError } from "../../errors.ts";

/** No daemon answers on the socket or URL (exit code 3). */
export class DaemonUnreachableError extends AppError {
  readonly status = 503;
  readonly code = "DAEMON_UNREACHABLE";
}

/** The daemon refused the request (exit code 1); carries the daemon's own code. */
export class RequestRefusedError extends AppError {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
  }
}
