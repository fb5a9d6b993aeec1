/** API keys are kept as SHA-256 hashes and compared in constant time. */
import { createHash, timingSafeEqual } from "node:crypto";

export function sha256(key: string): Buffer {
  return createHash("sha256").update(key, "utf8").digest();
}

/** Whether the key hashes to `digest`, in time that does not depend on where they differ. */
export function keyMatches(digest: Buffer, key: string): boolean {
  return timingSafeEqual(digest, sha256(key));
}
