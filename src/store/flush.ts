/** fsync(2) of a file or a directory by path: what makes a written file, or a rename in a directory, durable. */
import { closeSync, fsyncSync, openSync } from "node:fs";

export function flushToDisk(path: string): void {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
