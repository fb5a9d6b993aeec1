/**
 * Building the command string an SSH exec channel runs. The remote side hands that string to the
 * login shell, so every argument is single-quoted POSIX-style and every value that did not come
 * from this code base passes one of the validators below first. No other module builds command
 * strings.
 */
import { isIpv4 } from "../net/ipv4.ts";
import { InvalidCommandArgumentError } from "./errors.ts";

const INTERFACE = /^[A-Za-z0-9_.-]{1,15}$/;
const DOMAIN_NAME = /^[A-Za-z0-9][A-Za-z0-9_.+:-]{0,199}$/;
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
/** scheme://rest, where rest uses URI characters but none a shell or virsh would treat specially. */
const LIBVIRT_URI = /^[a-z][a-z0-9+.-]*:\/\/[A-Za-z0-9._~:/?@&=+,%[\]-]*$/;

/** Quotes one argument for a POSIX shell: `'...'`, with each `'` written as `'\''`. */
export function quoteArg(arg: string): string {
  return `'${arg.replaceAll("'", "'\\''")}'`;
}

/**
 * Joins an argv into one command string, every argument quoted. Refuses an empty argv and NUL
 * bytes (which no command line can carry); everything else is quoted, not interpreted.
 */
export function buildCommand(argv: readonly string[]): string {
  if (argv.length === 0) throw new InvalidCommandArgumentError("empty command");
  for (const arg of argv) {
    if (typeof arg !== "string") throw new InvalidCommandArgumentError(`command argument is not a string: ${arg}`);
    if (arg.includes("\0")) throw new InvalidCommandArgumentError("command argument contains a NUL byte");
  }
  return argv.map(quoteArg).join(" ");
}

/** A canonical dotted-quad IPv4 address, or throws. Returns the value for use inline. */
export function validIpv4(value: string, what = "IPv4 address"): string {
  if (typeof value !== "string" || !isIpv4(value)) throw invalid(what, value);
  return value;
}

/** A network interface name (Linux allows at most 15 bytes). */
export function validInterface(value: string): string {
  if (typeof value !== "string" || !INTERFACE.test(value)) throw invalid("interface name", value);
  return value;
}

/** A libvirt domain name (no leading `-`, so never an option) or a domain UUID. */
export function validDomain(value: string): string {
  if (typeof value !== "string" || !(DOMAIN_NAME.test(value) || UUID.test(value))) {
    throw invalid("libvirt domain name or UUID", value);
  }
  return value;
}

/** A libvirt connection URI (these come from the config only). */
export function validLibvirtUri(value: string): string {
  if (typeof value !== "string" || value.length > 1024 || !LIBVIRT_URI.test(value)) throw invalid("libvirt URI", value);
  return value;
}

function invalid(what: string, value: unknown): InvalidCommandArgumentError {
  const shown =
    typeof value === "string" ? JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value) : String(value);
  return new InvalidCommandArgumentError(`invalid ${what}: ${shown}`);
}
