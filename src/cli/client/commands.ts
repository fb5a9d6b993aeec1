/**
 * The client commands: each names its arguments and options, the request it makes, and how its
 * answer is shown to a person (`--json` prints the daemon's JSON instead).
 */
import type { DaemonClient } from "./connection.ts";
import { type Row, record, table } from "./format.ts";

export interface ClientCommand {
  /** e.g. "allocate" or "eip associate". */
  readonly name: string;
  /** Positional argument names, in order (all required). */
  readonly args: readonly string[];
  /** String options this command takes (besides the connection options). */
  readonly options: readonly string[];
  /** Boolean flags this command takes. */
  readonly flags?: readonly string[];
  readonly summary: string;
  run(client: DaemonClient, args: Record<string, string>, options: Record<string, string | boolean>): Promise<unknown>;
  show(answer: unknown): string;
}

const ALLOCATION_COLUMNS = ["ip", "vm_id", "name", "hostname", "host", "pool", "created_at"];
const EIP_COLUMNS = ["id", "public_ip", "state", "instance_id", "host", "private_ip", "pool"];

const enc = encodeURIComponent;

/** Allocations per request when `ippool list` pages through a pool. */
const LIST_PAGE_SIZE = 1000;

function query(options: Record<string, string | boolean>, names: Record<string, string>): string {
  const params = new URLSearchParams();
  for (const [option, param] of Object.entries(names)) {
    const value = options[option];
    if (typeof value === "string") params.set(param, value);
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

/**
 * `MAC@network:NAME,MAC@bridge:NAME` → the API's interfaces. Anything else is sent as it is
 * written, for the daemon to refuse with its schema message.
 */
function interfacesOf(text: string): unknown[] {
  return text
    .split(",")
    .filter((item) => item !== "")
    .map((item) => {
      const match = /^([^@]*)@(network|bridge):(.*)$/.exec(item);
      return match ? { mac: match[1], [match[2] as string]: match[3] } : { mac: item };
    });
}

function defined(values: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value !== undefined));
}

const showRecord = (answer: unknown) => record(answer as Row);
/** Stats with `usage` as a percentage a person reads at a glance. */
const percent = (stats: Row): Row => ({ ...stats, usage: `${(stats.usage as number).toFixed(1)}%` });
const showReleased = (answer: unknown) =>
  table((answer as { released: Row[] }).released, ["ip", "vm_id", "pool"]).replace(/^/, "released\n");

/** Seconds as a person reads an age: 45s, 15m, 15m30s, 2h05m, 3d04h. */
export function age(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n: number) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60 ? `${pad(s % 60)}s` : ""}`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86_400)}d${pad(Math.floor((s % 86_400) / 3600))}h`;
}

interface LeakAnswer {
  grace_period_s: number;
  hosts: { name: string; domains: number }[];
  leaks: (Row & { age_s: number })[];
  released?: Row[];
  reason?: string;
}

/** What was checked, the leaks (ip, vm_id, pool, host, age), and what was released (or that nothing was). */
function showLeaks(answer: unknown): string {
  const report = answer as LeakAnswer;
  if (report.reason !== undefined) return `no leaked allocations: ${report.reason}\n`;
  const hosts = report.hosts.map((host) => `${host.name} (${host.domains} domains)`).join(", ");
  const lines = [`checked ${hosts}; grace period ${age(report.grace_period_s)}`];
  if (report.leaks.length === 0) lines.push("no leaked allocations");
  else {
    lines.push(`${report.leaks.length} leaked (no host has the VM):`);
    const rows = report.leaks.map((leak) => ({ ...leak, age: age(leak.age_s) }));
    lines.push(table(rows, ["ip", "vm_id", "pool", "host", "age"]).trimEnd());
  }
  if (report.released === undefined) {
    if (report.leaks.length > 0) lines.push("dry run: nothing released");
  } else if (report.released.length > 0 || report.leaks.length > 0) {
    lines.push(`released ${report.released.length}:`);
    if (report.released.length > 0) lines.push(table(report.released, ["ip", "vm_id", "pool"]).trimEnd());
  }
  return `${lines.join("\n")}\n`;
}

export const COMMANDS: readonly ClientCommand[] = [
  {
    name: "health",
    args: [],
    options: [],
    summary: "whether the daemon answers (GET /api/v1/health)",
    run: (client) => client.request("GET", "/api/v1/health"),
    show: showRecord,
  },
  {
    name: "allocate",
    args: ["vm_id"],
    options: ["pool", "ip", "hostname", "name", "host", "interfaces"],
    flags: ["adopt"],
    summary:
      "give VM_ID an address (idempotent); --name gives the VM a second name to be found by; --interfaces MAC@network:NAME,MAC@bridge:NAME names its NICs (DHCP)",
    run: (client, { vm_id }, options) =>
      client.request(
        "POST",
        "/api/v1/ip/allocate",
        defined({
          vm_id,
          pool: options.pool,
          ip: options.ip,
          hostname: options.hostname,
          name: options.name,
          host: options.host,
          interfaces: typeof options.interfaces === "string" ? interfacesOf(options.interfaces) : undefined,
          adopt: options.adopt === true ? true : undefined,
        }),
      ),
    show: showRecord,
  },
  {
    name: "release",
    args: ["vm_id"],
    options: ["pool", "host"],
    summary: "release VM_ID's address (in every pool unless --pool; kept if --host is not the VM's host)",
    run: (client, { vm_id }, options) =>
      client.request(
        "DELETE",
        `/api/v1/ip/release/${enc(vm_id as string)}${query(options, { pool: "pool", host: "host" })}`,
      ),
    show: showReleased,
  },
  {
    name: "release-ip",
    args: ["ip"],
    options: [],
    summary: "release an address",
    run: (client, { ip }) => client.request("DELETE", `/api/v1/ip/release-by-ip/${enc(ip as string)}`),
    show: showReleased,
  },
  {
    name: "show",
    args: ["vm_id"],
    options: ["pool"],
    summary: "show VM_ID's allocation",
    run: (client, { vm_id }, options) =>
      client.request("GET", `/api/v1/ip/${enc(vm_id as string)}${query(options, { pool: "pool" })}`),
    show: showRecord,
  },
  {
    name: "list",
    args: [],
    options: ["pool"],
    summary: "list allocations",
    run: (client, _args, options) =>
      client.requestAll(`/api/v1/ip/allocations${query(options, { pool: "pool" })}`, LIST_PAGE_SIZE),
    show: (answer) => table(answer as Row[], ALLOCATION_COLUMNS),
  },
  {
    name: "stats",
    args: [],
    options: ["pool"],
    summary: "a pool's usage",
    run: (client, _args, options) => client.request("GET", `/api/v1/ip/stats${query(options, { pool: "pool" })}`),
    show: (answer) => record(percent(answer as Row)),
  },
  {
    name: "pools",
    args: [],
    options: [],
    summary: "every pool with its usage",
    run: (client) => client.request("GET", "/api/v1/pools"),
    show: (answer) =>
      table(
        (answer as (Row & { stats: Row })[]).map((pool) => ({ ...pool, ...percent(pool.stats), name: pool.name })),
        ["name", "network", "gateway", "strategy", "allocated", "available", "usage"],
      ),
  },
  {
    name: "gc",
    args: [],
    options: ["pool"],
    flags: ["dry-run"],
    summary: "release allocations whose VM no host has (--dry-run only lists them)",
    run: (client, _args, options) =>
      client.request(
        options["dry-run"] ? "GET" : "POST",
        `/api/v1/leaks${options["dry-run"] ? "" : "/release"}${query(options, { pool: "pool" })}`,
      ),
    show: showLeaks,
  },
  {
    name: "eip allocate",
    args: [],
    options: ["pool", "idempotency-key"],
    summary: "allocate an elastic IP",
    run: (client, _args, options) =>
      client.request(
        "POST",
        "/elastic-ips",
        defined({ pool: options.pool, idempotency_key: options["idempotency-key"] }),
      ),
    show: showRecord,
  },
  {
    name: "eip list",
    args: [],
    options: ["state", "instance"],
    summary: "the project's elastic IPs",
    run: (client, _args, options) =>
      client.request("GET", `/elastic-ips${query(options, { state: "state", instance: "instance_id" })}`),
    show: (answer) => table(answer as Row[], EIP_COLUMNS),
  },
  {
    name: "eip show",
    args: ["id"],
    options: [],
    summary: "one elastic IP",
    run: (client, { id }) => client.request("GET", `/elastic-ips/${enc(id as string)}`),
    show: showRecord,
  },
  {
    name: "eip associate",
    args: ["id", "instance"],
    options: [],
    flags: ["allow-reassociation"],
    summary: "point an elastic IP at an instance (--allow-reassociation moves it)",
    run: (client, { id, instance }, options) =>
      client.request(
        "POST",
        `/elastic-ips/${enc(id as string)}/associate`,
        defined({ instance_id: instance, allow_reassociation: options["allow-reassociation"] }),
      ),
    show: showRecord,
  },
  {
    name: "eip disassociate",
    args: ["id"],
    options: [],
    summary: "take an elastic IP off its instance",
    run: (client, { id }) => client.request("POST", `/elastic-ips/${enc(id as string)}/disassociate`),
    show: showRecord,
  },
  {
    name: "eip release",
    args: ["id"],
    options: [],
    summary: "give an elastic IP back",
    run: (client, { id }) => client.request("DELETE", `/elastic-ips/${enc(id as string)}`),
    show: showRecord,
  },
];
