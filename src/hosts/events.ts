/**
 * What an SSH connection reports about the commands it runs, for metrics. The host layer knows
 * nothing of how these are recorded (`src/metrics/` implements them).
 */

/**
 * Why a command did not succeed: it ran and exited non-zero (some of those are expected, e.g.
 * `conntrack -D` with nothing to delete), it timed out, the host could not be reached, or the
 * channel could not be opened.
 */
export type CommandFailure = "exit_status" | "timeout" | "unavailable" | "error";

export interface HostCommandEvents {
  /**
   * One command finished. `command` is the program only (argv[0], after `sudo -n`), never an
   * argument. `seconds` is null when the command never started (host not connected).
   */
  command(host: string, command: string, seconds: number | null, failure: CommandFailure | null): void;
}

/** The program an argv runs: argv[0], or for `sudo [-options] program …` the program. */
export function commandName(argv: readonly string[]): string {
  if (argv[0] !== "sudo") return argv[0] ?? "";
  return argv.slice(1).find((arg) => !arg.startsWith("-")) ?? "sudo";
}
