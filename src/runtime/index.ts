/** Picks the runtime-specific side at start; everything else imports only this module. */
import type { Runtime } from "./types.ts";

export type { FetchHandler, Listener, Runtime } from "./types.ts";
export { LISTENER_MAX_BODY } from "./types.ts";

export async function currentRuntime(): Promise<Runtime> {
  if ("Bun" in globalThis) return (await import("./bun.ts")).bunRuntime;
  return (await import("./deno.ts")).denoRuntime;
}
