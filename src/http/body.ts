/**
 * Request bodies are read with a hard limit: a declared Content-Length over it is refused
 * before reading, and a chunked body is cut off as soon as it passes it.
 */
import { MalformedJsonError, PayloadTooLargeError, RequestValidationError } from "./errors.ts";

export const MAX_BODY_BYTES = 64 * 1024;

export function declaredTooLarge(request: Request): boolean {
  const length = Number(request.headers.get("content-length") ?? 0);
  return length > MAX_BODY_BYTES;
}

async function readLimited(request: Request): Promise<Uint8Array> {
  if (!request.body) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_BODY_BYTES) {
      await reader.cancel();
      throw new PayloadTooLargeError(`request body is larger than ${MAX_BODY_BYTES} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

/**
 * Object keys that shadow the methods used to describe a value: an object like
 * `{"toString": 1}` makes the schema validator's error message itself throw (found by the fuzzer:
 * it answered 500). No request field is an object, so such a body is refused outright.
 */
const SHADOWING_KEYS = new Set(["toString", "valueOf", "toJSON"]);

/** Parses the body as JSON whatever its declared type (the original API did not insist); empty → undefined. */
export async function readJsonBody(request: Request): Promise<unknown> {
  if (declaredTooLarge(request)) throw new PayloadTooLargeError(`request body is larger than ${MAX_BODY_BYTES} bytes`);
  // A declared length is already known to be within the limit: read it in one go.
  const text = request.headers.has("content-length")
    ? await request.text()
    : new TextDecoder().decode(await readLimited(request));
  if (text.trim() === "") return undefined;
  let shadowing: string | undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text, (key, value) => {
      if (SHADOWING_KEYS.has(key)) shadowing = key;
      return value;
    });
  } catch {
    throw new MalformedJsonError("request body is not valid JSON");
  }
  if (shadowing !== undefined) throw new RequestValidationError(`body: a key named ${shadowing} is not accepted`, 422);
  return parsed;
}
