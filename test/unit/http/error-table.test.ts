/**
 * One table of error codes: each error class carries its status and code, and the OpenAPI
 * document's table (`http/error-schemas.ts`) must say the same for every class the API can answer
 * with. Every `errors.ts` module under src/ is read, so a new error class is checked as it lands.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { AppError } from "../../../src/errors.ts";
import { documentedStatus } from "../../../src/http/error-schemas.ts";

const SRC = join(import.meta.dir, "../../../src");

/** Classes that never reach a client of the API, and why. */
const NOT_ANSWERED_OVER_HTTP = new Set([
  "PoolStateConflictError", // refuses the start
  "ConfigError", // refuses the start
  "HostConfigError", // refuses the start (a ConfigError)
  "StoreOpenError", // refuses the start
  "ListenError", // refuses the start
  "DataDirInUseError", // refuses the start
  "DataDirLockError", // refuses the start
  "StoreDamagedError", // refuses the start (and fsck)
  "DaemonUnreachableError", // the client's own failure (exit 3)
  "InvalidCommandArgumentError", // the API's schemas admit only what host commands accept
  "SchemaTooNewError", // refuses the start, and ippool db migrate (exit 2)
  "SchemaTooOldError", // refuses the start (exit 2)
  "DatabaseUnreachableError", // refuses the start, and ippool db migrate (exit 3)
  "ImportTargetNotEmptyError", // ippool db import's own refusal (exit 1)
  "DaemonNameTakenError", // refuses the start (exit 2), or stops the daemon
]);

type ErrorClass = new (message: string, ...rest: never[]) => AppError;

async function errorClasses(): Promise<{ name: string; make: () => AppError }[]> {
  const found: { name: string; make: () => AppError }[] = [];
  for await (const file of new Bun.Glob("**/errors.ts").scan(SRC)) {
    const module = (await import(join(SRC, file))) as Record<string, unknown>;
    for (const [name, value] of Object.entries(module)) {
      if (typeof value !== "function" || !(value.prototype instanceof AppError)) continue;
      const make = () => new (value as ErrorClass)("test", ...([422] as never[]));
      found.push({ name, make });
    }
  }
  return found;
}

describe("the error table", () => {
  test("every error class the API can answer with has the status the table documents for its code", async () => {
    const classes = await errorClasses();
    expect(classes.length).toBeGreaterThan(20);
    const mismatches: string[] = [];
    for (const { name, make } of classes) {
      if (NOT_ANSWERED_OVER_HTTP.has(name)) continue;
      let error: AppError;
      try {
        error = make();
      } catch {
        continue; // abstract
      }
      if (error.code === undefined) continue;
      const documented = documentedStatus(error.code);
      if (documented === undefined) mismatches.push(`${name}: code ${error.code} is not in the table`);
      else if (error.code !== "VALIDATION" && documented !== error.status)
        mismatches.push(`${name}: ${error.code} is ${error.status}, the table says ${documented}`);
    }
    expect(mismatches).toEqual([]);
  });
});
