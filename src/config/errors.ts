import { AppError } from "../errors.ts";

/** The configuration (file or flags) is invalid; the message names the offending key. */
export class ConfigError extends AppError {
  readonly status = 400;
  readonly code = "CONFIG_INVALID";
}
