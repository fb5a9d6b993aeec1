import { AppError } from "../../errors.ts";

/** The database's schema is newer than this binary: it must not write into a schema it does not know. */
export class SchemaTooNewError extends AppError {
  readonly status = 503;
  readonly code = "SCHEMA_TOO_NEW";
}

/** The database could not be reached or refused the connection. */
export class DatabaseUnreachableError extends AppError {
  readonly status = 503;
  readonly code = "DATABASE_UNREACHABLE";
}
