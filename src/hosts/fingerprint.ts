import { createHash } from "node:crypto";

/**
 * The fingerprint `ssh-keygen -lf` prints for a host key: `SHA256:` and the unpadded base64 of
 * the SHA-256 of the raw key blob (the base64-decoded second field of a `.pub` file).
 */
export function hostKeyFingerprint(keyBlob: Uint8Array): string {
  return `SHA256:${createHash("sha256").update(keyBlob).digest("base64").replace(/=+$/, "")}`;
}
