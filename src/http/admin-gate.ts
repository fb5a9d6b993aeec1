/** Applies the admin gate to a pool or leak request: only TCP requests are checked. */
import type { AdminGate } from "../auth/admin.ts";
import { type ErrorCode, errorResponses } from "./error-schemas.ts";
import { transportOf } from "./transport.ts";

export function admitAdmin(request: Request, gate: AdminGate): void {
  // Most listeners need no key (loopback): the header is read only where it is checked.
  if (gate.required && transportOf(request) === "tcp") gate.check(request.headers.get("x-api-key"));
}

/** Error responses of a gated route: its own codes plus 401 for the admin key. */
export function adminErrors(...codes: ErrorCode[]) {
  return errorResponses("UNAUTHORIZED", ...codes);
}
