/**
 * Request bodies are read with a hard limit and a deadline: a declared Content-Length over the
 * limit is refused before reading, a body that keeps coming is cut off as soon as it passes it,
 * and one that has not arrived whole by the deadline (a client trickling it) is refused with 408.
 */
import { MalformedJsonError, PayloadTooLargeError, RequestTimeoutError, RequestValidationError } from "./errors.ts";

export const MAX_BODY_BYTES = 64 * 1024;
/**
 * Counted from when the handler starts reading. The listener's idle timer is lifted while a
 * request is handled (runtime/bun.ts), so this is what ends a client trickling its body; any
 * client sends 64 KiB well within it.
 */
export const BODY_DEADLINE_MS = 5_000;

export function declaredTooLarge(request: Request): boolean {
  const length = Number(request.headers.get("content-length") ?? 0);
  return length > MAX_BODY_BYTES;
}

async function readLimited(request: Request): Promise<Uint8Array> {
  if (!request.body) return new Uint8Array();
  const reader = request.body.getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new RequestTimeoutError(`request body did not arrive within ${BODY_DEADLINE_MS} ms`)),
      BODY_DEADLINE_MS,
    );
  });
  try {
    return await collect(() => reader.read(), expired);
  } catch (error) {
    // Not awaited: cancelling the body of a request re-made for routing (app.ts `routable`, a
    // one-letter Host) settles only once the client stops sending, and the answer must not wait.
    reader.cancel().catch(() => {});
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

async function collect(
  read: () => ReturnType<ReadableStreamDefaultReader<Uint8Array>["read"]>,
  expired: Promise<never>,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await Promise.race([read(), expired]);
    if (done) return Buffer.concat(chunks);
    size += value.byteLength;
    if (size > MAX_BODY_BYTES) throw new PayloadTooLargeError(`request body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(value);
  }
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
  const text = new TextDecoder().decode(await readLimited(request));
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
