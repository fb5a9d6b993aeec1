/**
 * The result of a step that runs inside a shared store transaction: such steps return their
 * domain error instead of throwing it, so a refusal never aborts the other requests committed
 * in the same transaction; the caller unwraps it after the commit.
 */
import type { AppError } from "./errors.ts";

export type Outcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: AppError };

export function fail(error: AppError): Outcome<never> {
  return { ok: false, error };
}

export function unwrap<T>(outcome: Outcome<T>): T {
  if (!outcome.ok) throw outcome.error;
  return outcome.value;
}
