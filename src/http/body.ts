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
/** How often the deadlines are checked: a late body is refused between 5.0 and 5.25 s. */
const DEADLINE_SWEEP_MS = 250;

export function declaredTooLarge(request: Request): boolean {
  const length = Number(request.headers.get("content-length") ?? 0);
  return length > MAX_BODY_BYTES;
}

/**
 * The body's bytes, whole, within the deadline. A declared length is at most the limit (checked
 * before), and the listener reads no more than it declares: the runtime's native read, the
 * cheapest there is, takes it. A chunked body has no length to trust: it is read chunk by chunk
 * and cut off once it passes the limit.
 */
function readLimited(request: Request): Promise<Uint8Array> {
  if (!request.body) return Promise.resolve(new Uint8Array());
  if (request.headers.has("content-length")) {
    const whole = request.arrayBuffer();
    // A body refused for lateness may still settle (or fail) when its connection closes.
    whole.catch(() => {});
    return deadlines.within(whole.then((buffer) => new Uint8Array(buffer)));
  }
  const reader = request.body.getReader();
  return deadlines.within(collect(() => reader.read())).catch((error: unknown) => {
    // Not awaited: cancelling the body of a request re-made for routing (app.ts `routable`, a
    // one-letter Host) settles only once the client stops sending, and the answer must not wait.
    reader.cancel().catch(() => {});
    throw error;
  });
}

async function collect(read: () => ReturnType<ReadableStreamDefaultReader<Uint8Array>["read"]>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await read();
    if (done) return Buffer.concat(chunks);
    size += value.byteLength;
    if (size > MAX_BODY_BYTES) throw new PayloadTooLargeError(`request body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(value);
  }
}

interface PendingBody {
  readonly due: number;
  readonly expire: (error: Error) => void;
}

/**
 * The deadlines of every body being read, checked by one timer: a timer armed and cleared per
 * request cost more than the rest of reading a small body.
 */
class BodyDeadlines {
  private readonly pending = new Set<PendingBody>();
  private sweeper: ReturnType<typeof setInterval> | undefined;

  within<T>(read: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const body: PendingBody = { due: performance.now() + BODY_DEADLINE_MS, expire: reject };
      this.pending.add(body);
      this.sweeper ??= this.startSweeping();
      read.then(
        (value) => {
          this.pending.delete(body);
          resolve(value);
        },
        (error: unknown) => {
          this.pending.delete(body);
          reject(error);
        },
      );
    });
  }

  private startSweeping(): ReturnType<typeof setInterval> {
    const sweeper = setInterval(() => this.expireLate(), DEADLINE_SWEEP_MS);
    // Waiting bodies alone never keep the process alive.
    sweeper.unref?.();
    return sweeper;
  }

  private expireLate(): void {
    const now = performance.now();
    for (const body of this.pending) {
      if (body.due > now) continue;
      this.pending.delete(body);
      body.expire(new RequestTimeoutError(`request body did not arrive within ${BODY_DEADLINE_MS} ms`));
    }
  }
}

const deadlines = new BodyDeadlines();

/**
 * Object keys that shadow the methods used to describe a value: an object like
 * `{"toString": 1}` makes the schema validator's error message itself throw (found by the fuzzer:
 * it answered 500). No request field is an object, so such a body is refused outright.
 */
const SHADOWING_KEYS = new Set(["toString", "valueOf", "toJSON"]);

const decoder = new TextDecoder();

/** Parses the body as JSON whatever its declared type (the original API did not insist); empty → undefined. */
export async function readJsonBody(request: Request): Promise<unknown> {
  // A declared length over the limit never gets here: the listener's handler (app.ts) answers 413 before routing.
  const text = decoder.decode(await readLimited(request));
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
