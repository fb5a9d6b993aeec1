/**
 * Unix socket housekeeping: a leftover socket file from a crashed daemon is replaced, but
 * only after checking that no live daemon answers on it.
 */
import { chmodSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { dirname } from "node:path";
import { ListenError } from "./errors.ts";

export const SOCKET_MODE = 0o660;

function somebodyAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createConnection({ path });
    const done = (answered: boolean) => {
      probe.destroy();
      resolve(answered);
    };
    probe.once("connect", () => done(true));
    probe.once("error", () => done(false));
    probe.setTimeout(1000, () => done(false));
  });
}

export async function prepareSocketPath(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  if (!existsSync(path)) return;
  if (await somebodyAnswers(path)) {
    throw new ListenError(`socket ${path}: another daemon is answering on it; stop it first or pick another --socket`);
  }
  rmSync(path, { force: true });
}

export function restrictSocket(path: string): void {
  chmodSync(path, SOCKET_MODE);
}

export function removeSocket(path: string): void {
  rmSync(path, { force: true });
}
