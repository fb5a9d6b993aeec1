/**
 * `<data_dir>/store.id`: which store this directory holds and how its daemon last left it. It is
 * what tells a directory that never had a store (create one) from one whose store went missing or
 * was emptied (refuse: restore a backup), and a store file untouched since a clean stop (no check
 * needed) from one that may not be (check it first). Written atomically: a temporary file, fsync,
 * rename, fsync of the directory.
 */
import { readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Static, Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { StoreDamagedError } from "./errors.ts";
import { flushToDisk } from "./flush.ts";

export const MARKER_FILE = "store.id";

/** Nanosecond times as decimal strings (JSON has no 64-bit integers). */
const FileIdentity = Type.Object({
  size: Type.Integer({ minimum: 0 }),
  ino: Type.String({ pattern: "^\\d+$" }),
  ctimeNs: Type.String({ pattern: "^\\d+$" }),
  mtimeNs: Type.String({ pattern: "^\\d+$" }),
});

const StoreMarker = Type.Object({
  id: Type.String({ pattern: "^[0-9a-f-]{36}$" }),
  created: Type.String(),
  /** creating: made before the store, which is not yet trusted; running: a daemon serves it; stopped: cleanly. */
  state: Type.Union([Type.Literal("creating"), Type.Literal("running"), Type.Literal("stopped")]),
  /** At a clean stop, the store file as it was left. */
  file: Type.Optional(FileIdentity),
});

export type StoreMarker = Static<typeof StoreMarker>;
export type FileIdentity = Static<typeof FileIdentity>;

/** The marker, or null when the directory has none; a marker that does not parse is damage. */
export function readMarker(dataDir: string): StoreMarker | null {
  const path = join(dataDir, MARKER_FILE);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new StoreDamagedError(`${path}: cannot be read (${(error as NodeJS.ErrnoException).code})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!Value.Check(StoreMarker, parsed)) {
    throw new StoreDamagedError(
      `${path} is damaged (not the marker ippool writes): restore the data directory from a backup`,
    );
  }
  return parsed;
}

export function writeMarker(dataDir: string, marker: StoreMarker): void {
  const path = join(dataDir, MARKER_FILE);
  const temporary = `${path}.new`;
  writeFileSync(temporary, `${JSON.stringify(marker)}\n`, { mode: 0o640 });
  flushToDisk(temporary);
  renameSync(temporary, path);
  flushToDisk(dataDir);
}

/**
 * Size, inode, change and modification times: any write, truncation or replacement of the file
 * changes one. Both times, because a runtime may round one (Deno gives the change time in seconds).
 */
export function fileIdentity(path: string): FileIdentity | null {
  try {
    const { size, ino, ctimeNs, mtimeNs } = statSync(path, { bigint: true });
    return { size: Number(size), ino: String(ino), ctimeNs: String(ctimeNs), mtimeNs: String(mtimeNs) };
  } catch {
    return null;
  }
}
