/**
 * The pool API's door over TCP (README: "Who may call the pool API"). On a loopback listener it is
 * open, as the original API was; on any other address every pool and leak call needs the admin key
 * in `X-API-Key`, unless `server.open_pool_api` opens it on purpose. The Unix socket (mode 0660) is
 * the local administrator's own door and never asks.
 */

import { UnauthorizedError } from "./errors.ts";
import { keyMatches } from "./keys.ts";

export class AdminGate {
  private digest: Buffer | null = null;
  /** False on a loopback listener or with `server.open_pool_api`: the key is not asked for. */
  required = false;

  constructor(adminKeySha256: string | null, required: boolean) {
    this.update(adminKeySha256, required);
  }

  /** The key and whether it is needed, from now on (a reload). */
  update(adminKeySha256: string | null, required: boolean): void {
    this.digest = adminKeySha256 === null ? null : Buffer.from(adminKeySha256, "hex");
    this.required = required;
  }

  /** Throws UnauthorizedError unless the key is the admin key (or none is needed). */
  check(apiKey: string | null): void {
    if (!this.required) return;
    if (this.digest === null) {
      throw new UnauthorizedError(
        "the pool API over a non-loopback TCP listener needs server.admin_key_sha256 in the config",
      );
    }
    if (!apiKey) throw new UnauthorizedError("missing X-API-Key (the admin key)");
    if (!keyMatches(this.digest, apiKey)) throw new UnauthorizedError("invalid X-API-Key");
  }
}

/** 127.0.0.0/8, ::1 and localhost; anything else (0.0.0.0 included) can be reached from outside. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}
