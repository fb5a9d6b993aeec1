/**
 * The Elastic IP sections of the daemon configs that suites and benches write: `[[eip_pools]]` and
 * `[[projects]]` (with the API key stored as the daemon expects it, as its SHA-256). Configs that
 * are themselves under test (the config suites and fuzzer) spell their TOML out instead.
 */
import { createHash } from "node:crypto";

export interface ProjectSpec {
  readonly name: string;
  /** The plain key clients send in X-API-Key. */
  readonly apiKey: string;
  readonly quota?: number;
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** One `[[eip_pools]]` section per entry of `pools` (name → CIDR). */
export function eipPoolsToml(pools: Readonly<Record<string, string>>): string {
  return Object.entries(pools)
    .map(([name, cidr]) => `[[eip_pools]]\nname = ${JSON.stringify(name)}\ncidr = ${JSON.stringify(cidr)}\n`)
    .join("\n");
}

/** One `[[projects]]` section per project. */
export function projectsToml(projects: readonly ProjectSpec[]): string {
  return projects
    .map(({ name, apiKey, quota }) =>
      [
        "[[projects]]",
        `name = ${JSON.stringify(name)}`,
        `api_key_sha256 = "${sha256Hex(apiKey)}"`,
        ...(quota === undefined ? [] : [`quota = ${quota}`]),
        "",
      ].join("\n"),
    )
    .join("\n");
}
