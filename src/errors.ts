/**
 * The base of every domain error. Each subclass names one failure, carries the HTTP status it
 * maps to and a stable machine-readable `code`; the HTTP layer maps them in one place.
 */
export abstract class AppError extends Error {
  abstract readonly status: number;
  abstract readonly code: string;
}
