/**
 * The suites that start `dist/ippool` must test the current source, never a binary left from an
 * earlier build: if any file the binary is built from (src/, build.ts, package.json: what
 * `make build` depends on) is newer than it, it is rebuilt before the first daemon starts.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const INPUTS = ["src", "build.ts", "package.json"];

function newestMtime(path: string): number {
  const stat = statSync(path);
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = stat.mtimeMs;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, entry)));
  return newest;
}

/** Rebuilds `binary` (with `bun build.ts` in `root`) when it is missing or older than its inputs. */
export function ensureFreshBinary(root: string, binary: string): void {
  const built = existsSync(binary) ? statSync(binary).mtimeMs : 0;
  const newest = Math.max(...INPUTS.map((input) => newestMtime(join(root, input))));
  if (built >= newest) return;
  const result = Bun.spawnSync([process.execPath, "build.ts"], { cwd: root, stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) {
    throw new Error(`dist/ippool is older than the source and rebuilding it failed:\n${result.stderr.toString()}`);
  }
  console.error("test/support: dist/ippool was older than the source; rebuilt it");
}
