/**
 * Error answers as response schemas, so the OpenAPI document lists, per route and status, the
 * stable `code`s it can answer with. Built from one table of code → status; the HTTP layer maps
 * errors to these statuses in errors.ts.
 */
import { type TSchema, Type } from "@sinclair/typebox";

const STATUS_OF_CODE = {
  MALFORMED_JSON: 400,
  VALIDATION: 400,
  INVALID_IP: 400,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  POOL_NOT_FOUND: 404,
  INSTANCE_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  REQUEST_TIMEOUT: 408,
  ADDRESS_IN_USE: 409,
  VM_HAS_OTHER_ADDRESS: 409,
  VM_ON_OTHER_HOST: 409,
  QUOTA_EXCEEDED: 409,
  IDEMPOTENCY_MISMATCH: 409,
  STILL_ASSOCIATED: 409,
  ALREADY_ASSOCIATED: 409,
  INSTANCE_NOT_RUNNING: 409,
  INSTANCE_HAS_EIP: 409,
  INSTANCE_HAS_NO_ADDRESS: 409,
  NOT_ASSOCIATED: 409,
  PAYLOAD_TOO_LARGE: 413,
  HOST_UNAVAILABLE: 502,
  HOST_KEY_MISMATCH: 502,
  HOST_COMMAND_FAILED: 502,
  DHCP_RESERVATION_FAILED: 502,
  POOL_EXHAUSTED: 503,
  LEAK_CHECK_INCOMPLETE: 503,
  STORE_UNAVAILABLE: 503,
  LOCK_TIMEOUT: 503,
  STORAGE_FULL: 507,
} as const;

export type ErrorCode = keyof typeof STATUS_OF_CODE;

/** The status documented for a code (the error classes carry the same: a test holds them together). */
export function documentedStatus(code: string): number | undefined {
  return (STATUS_OF_CODE as Record<string, number>)[code];
}

/**
 * Every request with a body or parameters can be malformed, invalid, too large or too slow to
 * arrive; in fleet mode, any may find the shared store out of reach, or an EIP, instance or host
 * it must lock held by another daemon past the lock timeout.
 */
const REQUEST_ERRORS: ErrorCode[] = [
  "VALIDATION",
  "MALFORMED_JSON",
  "PAYLOAD_TOO_LARGE",
  "REQUEST_TIMEOUT",
  "STORE_UNAVAILABLE",
  "LOCK_TIMEOUT",
];

/** Response schemas for these codes (plus the request errors), keyed by HTTP status. */
export function errorResponses(...codes: ErrorCode[]): Record<number, TSchema> {
  const byStatus = new Map<number, Set<string>>();
  for (const code of [...REQUEST_ERRORS, ...codes]) {
    const status = STATUS_OF_CODE[code];
    byStatus.set(status, (byStatus.get(status) ?? new Set()).add(code));
  }
  // Body schema failures answer 422 (as the original's JSON extractor did), path/query ones 400.
  byStatus.set(422, new Set(["VALIDATION"]));
  return Object.fromEntries(
    [...byStatus].map(([status, set]) => {
      const list = [...set].sort();
      return [
        status,
        Type.Object(
          {
            error: Type.String({ description: "a message for people" }),
            code: Type.Union(list.map((code) => Type.Literal(code))),
          },
          { description: list.join(", ") },
        ),
      ];
    }),
  );
}
