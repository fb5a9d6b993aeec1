import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";

/** The daemon's heavy packages: loading any of them costs a client command tens of milliseconds. */
const DAEMON_PACKAGES = [
  "elysia",
  "@elysiajs/openapi",
  "lmdb",
  "ssh2",
  "prom-client",
  "@sinclair/typebox",
  "smol-toml",
  "postgres",
];

/** Every module and package src/main.ts loads before it runs a command: its static imports, followed. */
function staticImports(entry: string): { modules: Set<string>; packages: Set<string> } {
  const modules = new Set<string>();
  const packages = new Set<string>();
  const pending = [resolve(entry)];
  for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
    if (modules.has(file)) continue;
    modules.add(file);
    const source = readFileSync(file, "utf8");
    // `import type` is erased; `import(...)` is loaded only when a command needs it.
    for (const [, specifier] of source.matchAll(/^import (?!type )[^;]*? from "([^"]+)";/gms)) {
      if ((specifier as string).startsWith(".")) pending.push(resolve(dirname(file), specifier as string));
      else packages.add(specifier as string);
    }
  }
  return { modules, packages };
}

test("a client command loads none of the daemon's packages before it runs", () => {
  const { modules, packages } = staticImports("src/main.ts");
  expect([...packages].filter((name) => DAEMON_PACKAGES.some((heavy) => name.startsWith(heavy)))).toEqual([]);
  // The walk did follow the client's modules (a broken pattern would pass the check above vacuously).
  expect([...modules].some((file) => file.endsWith("src/cli/client/connection.ts"))).toBe(true);
  expect(packages.has("node:util")).toBe(true);
});
