/**
 * A database that stops answering without closing anything (its host powered off, a network that
 * drops packets, a server frozen) leaves a statement waiting for ever: TCP gives up on a silent
 * peer only after minutes. Every operation a request waits on is therefore given up after the
 * store's timeout (`[store] timeout_s`), and answered 503 like a lost connection.
 */

/** The store's timeout when none is configured. */
export const DEFAULT_TIMEOUT_S = 10;

/** The code `isConnectionFailure` (connection.ts) knows this failure by. */
export const SILENT_DATABASE = "DATABASE_SILENT";

export class DatabaseSilentError extends Error {
  readonly code = SILENT_DATABASE;

  constructor(timeoutMs: number) {
    super(`the database did not answer within ${timeoutMs / 1000} s`);
  }
}

/**
 * `work`, or a DatabaseSilentError once `timeoutMs` have passed without its answer; `onSilence`
 * is then called (the store replaces its connections). Work given up goes on unobserved: if it
 * commits later, the 503 said that whether a change was made is not known.
 */
export function withDeadline<T>(work: Promise<T>, timeoutMs: number, onSilence: () => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      onSilence();
      reject(new DatabaseSilentError(timeoutMs));
    }, timeoutMs);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
