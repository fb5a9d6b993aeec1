/** TypeBox schemas of the IP Pool API's requests and responses. */
import { type Static, Type } from "@sinclair/typebox";
import { INTERFACE_PATTERN, LIBVIRT_NETWORK_PATTERN, POOL_NAME_PATTERN } from "../config/schema.ts";

const DOTTED_QUAD = "^(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)(\\.(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)){3}$";
/**
 * Text as the original took it (any string), within bounds: no control characters, no unpaired
 * UTF-16 surrogates (they could not be stored apart from U+FFFD, so two ids would be one).
 */
const ANY_TEXT = "^(?:[^\\x00-\\x1f\\x7f\\ud800-\\udfff]|[\\ud800-\\udbff][\\udc00-\\udfff])*$";
/** At most 256 UTF-16 units: at most 768 bytes of UTF-8, well inside LMDB's key size with the pool name. */
const MAX_ID_LENGTH = 256;

export const Ipv4 = Type.String({ pattern: DOTTED_QUAD, maxLength: 15, description: "an IPv4 address (a.b.c.d)" });
export const VmId = Type.String({
  pattern: ANY_TEXT,
  minLength: 1,
  maxLength: MAX_ID_LENGTH,
  description: "any text of 1 to 256 characters without control characters, as the original took it",
});
/** Any text, as the original took it; a DNS name is derived from it where one is needed (DHCP). */
export const Hostname = Type.String({
  pattern: ANY_TEXT,
  maxLength: 1024,
  description: "the VM's host name: any text of up to 1024 characters without control characters",
});
/** A libvirt domain name: anything but control characters and "/" (libvirt refuses "/"). */
export const VmName = Type.String({
  pattern: "^(?:[^\\x00-\\x1f\\x7f/\\ud800-\\udfff]|[\\ud800-\\udbff][\\udc00-\\udfff])+$",
  minLength: 1,
  maxLength: 255,
  description:
    "the VM's name (a libvirt domain's name), an alias of its vm_id: 1 to 255 characters, no control characters or /",
});
export const PoolName = Type.String({ pattern: POOL_NAME_PATTERN, description: "a pool name" });
export const HostName = Type.String({ pattern: POOL_NAME_PATTERN, description: "a hypervisor host's configured name" });

const MAC = "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$";
/** A VM's NIC: its MAC and the libvirt network or bridge it is on (as its domain XML says). */
export const Interface = Type.Union([
  Type.Object(
    { mac: Type.String({ pattern: MAC }), network: Type.String({ pattern: LIBVIRT_NETWORK_PATTERN }) },
    { additionalProperties: false },
  ),
  Type.Object(
    { mac: Type.String({ pattern: MAC }), bridge: Type.String({ pattern: INTERFACE_PATTERN }) },
    { additionalProperties: false },
  ),
]);

export const AllocateBody = Type.Object({
  vm_id: VmId,
  hostname: Type.Optional(Type.Union([Hostname, Type.Null()])),
  name: Type.Optional(VmName),
  host: Type.Optional(HostName),
  adopt: Type.Optional(
    Type.Boolean({
      description:
        "a VM already running (libvirt's reconnect): a new allocation takes the address its NIC has leased, if free",
    }),
  ),
  interfaces: Type.Optional(
    Type.Array(Interface, {
      maxItems: 32,
      description:
        "the VM's NICs; without pool, the pool serving one of their networks or bridges is used, and its first NIC there gets a DHCP reservation",
    }),
  ),
  pool: Type.Optional(PoolName),
  ip: Type.Optional(Ipv4),
});
export type AllocateBody = Static<typeof AllocateBody>;

export const VmIdParams = Type.Object({ vm_id: VmId });
/** Any text: the original answered `Invalid IP address` (400) to anything not an address of the pool. */
export const IpParams = Type.Object({ ip: Type.String({ maxLength: 64, description: "an IPv4 address in a pool" }) });
export const PoolParams = Type.Object({ name: PoolName });

export const PoolQuery = Type.Object({ pool: Type.Optional(PoolName) });
export const ReleaseQuery = Type.Object({
  pool: Type.Optional(PoolName),
  host: Type.Optional({
    ...HostName,
    description: "the host reporting the release: a VM recorded on another host keeps its address (409)",
  }),
});
export const ListQuery = Type.Object({
  pool: Type.Optional(PoolName),
  after: Type.Optional(Ipv4),
  limit: Type.Optional(
    Type.String({ pattern: "^([1-9]\\d{0,4}|100000)$", description: "an integer from 1 to 100000" }),
  ),
});

export const AllocationView = Type.Object({
  ip: Ipv4,
  vm_id: Type.String(),
  hostname: Type.Optional(Type.String()),
  name: Type.Optional(Type.String()),
  host: Type.Optional(Type.String()),
  interface: Type.Optional(
    Type.Object({ mac: Type.String(), network: Type.Optional(Type.String()), bridge: Type.Optional(Type.String()) }),
  ),
  pool: Type.String(),
  gateway: Type.Optional(Ipv4),
  network: Type.String(),
  created_at: Type.String({ description: "RFC 3339" }),
});
export type AllocationView = Static<typeof AllocationView>;

export const ReleaseView = Type.Object({
  message: Type.String(),
  vm_id: Type.Optional(Type.String()),
  ip: Type.Optional(Ipv4),
  released: Type.Array(AllocationView),
});

export const StatsView = Type.Object({
  pool: Type.String(),
  network: Type.String(),
  gateway: Type.Optional(Ipv4),
  total: Type.Integer(),
  allocated: Type.Integer(),
  available: Type.Integer(),
  usage: Type.Number({ description: "percent of usable addresses allocated" }),
});
export type StatsView = Static<typeof StatsView>;

export const PoolView = Type.Object({
  name: Type.String(),
  network: Type.String(),
  gateway: Type.Optional(Ipv4),
  strategy: Type.String(),
  default: Type.Boolean(),
  reserved: Type.Array(Type.String()),
  stats: StatsView,
});

export const HealthView = Type.Object({ status: Type.Literal("healthy") });
