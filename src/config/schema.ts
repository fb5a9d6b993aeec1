/**
 * The shape of the TOML configuration file, as TypeBox schemas. Semantic checks that span
 * fields (gateway inside the CIDR, pools not overlapping, …) live in `validate.ts`.
 */
import { type Static, Type } from "@sinclair/typebox";

export const POOL_NAME_PATTERN = "^[a-z0-9][a-z0-9_-]{0,62}$";
/** libvirt network names in practice: letters, digits, and . _ : - (no / or spaces: they name files). */
export const LIBVIRT_NETWORK_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$";
export const INTERFACE_PATTERN = "^[A-Za-z0-9_.-]{1,15}$";

export const PoolSection = Type.Object(
  {
    name: Type.String({ pattern: POOL_NAME_PATTERN, description: "lower-case letters, digits, - and _" }),
    cidr: Type.String({ description: "an IPv4 network a.b.c.d/n, n from 8 to 32" }),
    gateway: Type.Optional(Type.String()),
    reserved: Type.Optional(Type.Array(Type.String(), { maxItems: 4096 })),
    strategy: Type.Optional(Type.Union([Type.Literal("next-fit"), Type.Literal("lowest")])),
    default: Type.Optional(Type.Boolean()),
    networks: Type.Optional(
      Type.Array(Type.String({ pattern: LIBVIRT_NETWORK_PATTERN, description: "a libvirt network's name" }), {
        maxItems: 64,
        description: "libvirt networks whose dnsmasq hands this pool's addresses to VMs",
      }),
    ),
    bridges: Type.Optional(
      Type.Array(Type.String({ pattern: INTERFACE_PATTERN, description: "a bridge interface's name" }), {
        maxItems: 64,
        description: "bridges whose (operator-run) dnsmasq hands this pool's addresses to VMs",
      }),
    ),
  },
  { additionalProperties: false },
);

export const DhcpSection = Type.Object(
  {
    dir: Type.Optional(Type.String({ minLength: 1, description: "where the reservation files are kept" })),
    libvirt_run_dir: Type.Optional(
      Type.String({ minLength: 1, description: "where libvirt keeps each network's pid file and live XML" }),
    ),
    libvirt_lease_dir: Type.Optional(
      Type.String({ minLength: 1, description: "where libvirt keeps its networks' leases (<bridge>.status)" }),
    ),
  },
  { additionalProperties: false },
);

export const ServerSection = Type.Object(
  {
    listen: Type.Optional(Type.String({ description: 'host:port, or "" to turn TCP off' })),
    socket: Type.Optional(Type.String({ description: 'Unix socket path, or "" to turn it off' })),
    data_dir: Type.Optional(Type.String({ minLength: 1 })),
    admin_key_sha256: Type.Optional(
      Type.String({ pattern: "^[0-9a-fA-F]{64}$", description: "the hex SHA-256 of the admin key" }),
    ),
    open_pool_api: Type.Optional(
      Type.Boolean({
        description: "answer the pool API over TCP without the admin key on every address, as the original did",
      }),
    ),
    log_format: Type.Optional(Type.Union([Type.Literal("text"), Type.Literal("json")])),
    log_level: Type.Optional(
      Type.Union([Type.Literal("debug"), Type.Literal("info"), Type.Literal("warn"), Type.Literal("error")]),
    ),
  },
  { additionalProperties: false },
);

/** Public pools for elastic IPs: no gateway, no strategy choice (next-fit, so a released EIP rests). */
export const EipPoolSection = Type.Object(
  {
    name: Type.String({ pattern: POOL_NAME_PATTERN, description: "lower-case letters, digits, - and _" }),
    cidr: Type.String({ description: "an IPv4 network a.b.c.d/n, n from 8 to 32" }),
    reserved: Type.Optional(Type.Array(Type.String(), { maxItems: 4096 })),
    default: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

export const ProjectSection = Type.Object(
  {
    name: Type.String({ pattern: POOL_NAME_PATTERN, description: "lower-case letters, digits, - and _" }),
    api_key_sha256: Type.String({
      pattern: "^[0-9a-fA-F]{64}$",
      description: "the hex SHA-256 of the project's API key",
    }),
    quota: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000 })),
  },
  { additionalProperties: false },
);

export const HostSection = Type.Object(
  {
    name: Type.String({ pattern: POOL_NAME_PATTERN, description: "lower-case letters, digits, - and _" }),
    address: Type.String({ minLength: 1, maxLength: 253, description: "IP address or DNS name of the host's sshd" }),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    user: Type.String({ pattern: "^[a-z_][a-z0-9_-]{0,31}$", description: "a login name" }),
    private_key: Type.String({ minLength: 1, description: "path of the SSH private key (mode 0600)" }),
    host_key: Type.String({
      pattern: "^SHA256:[A-Za-z0-9+/]{43}$",
      description: "the pinned host key, SHA256:… as ssh-keygen -lf prints it",
    }),
    libvirt_uri: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
    sudo: Type.Optional(Type.Boolean({ description: "run nft, ip, conntrack and arping through sudo -n" })),
    public_interface: Type.String({ pattern: INTERFACE_PATTERN, description: "a network interface name" }),
    connect_timeout_ms: Type.Optional(Type.Integer({ minimum: 100, maximum: 600_000 })),
    command_timeout_ms: Type.Optional(Type.Integer({ minimum: 100, maximum: 600_000 })),
  },
  { additionalProperties: false },
);

export const ReconcileSection = Type.Object(
  {
    interval_s: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400, description: "0 turns periodic runs off" })),
  },
  { additionalProperties: false },
);

export const LeaksSection = Type.Object(
  {
    grace_period_s: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 31_536_000,
        description: "seconds an allocation is left alone before it may be called a leak",
      }),
    ),
    collect_interval_s: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 86_400,
        description: "seconds between releases of leaked hook-made allocations (undefined domains); 0 turns them off",
      }),
    ),
  },
  { additionalProperties: false },
);

export const DAEMON_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$";

export const StoreSection = Type.Object(
  {
    backend: Type.Optional(
      Type.Union([Type.Literal("lmdb"), Type.Literal("postgres")], {
        description:
          "lmdb: the embedded store in data_dir (one host); postgres: a database shared by a fleet's daemons",
      }),
    ),
    url: Type.Optional(
      Type.String({
        pattern: "^postgres(ql)?://",
        maxLength: 4096,
        description: "postgres://user@host1,host2/db?target_session_attrs=primary (or env IPPOOL_DATABASE_URL)",
      }),
    ),
    daemon: Type.Optional(
      Type.String({
        pattern: DAEMON_NAME_PATTERN,
        description: "this daemon's name in the fleet (default: the host name); unique per daemon",
      }),
    ),
    lease_s: Type.Optional(
      Type.Integer({
        minimum: 2,
        maximum: 3600,
        description:
          "seconds a daemon's pages stay its own after its last heartbeat, then other daemons may take them (default 15; the same on every daemon)",
      }),
    ),
    timeout_s: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 3600,
        description:
          "seconds a request waits for the database before it is answered 503 STORE_UNAVAILABLE and the daemon opens new connections (default 10)",
      }),
    ),
  },
  { additionalProperties: false },
);

export const ConfigFile = Type.Object(
  {
    server: Type.Optional(ServerSection),
    store: Type.Optional(StoreSection),
    pools: Type.Optional(Type.Array(PoolSection, { minItems: 1, maxItems: 256 })),
    eip_pools: Type.Optional(Type.Array(EipPoolSection, { maxItems: 256 })),
    projects: Type.Optional(Type.Array(ProjectSection, { maxItems: 10_000 })),
    hosts: Type.Optional(Type.Array(HostSection, { maxItems: 10_000 })),
    reconcile: Type.Optional(ReconcileSection),
    leaks: Type.Optional(LeaksSection),
    dhcp: Type.Optional(DhcpSection),
  },
  { additionalProperties: false },
);

export type ConfigFile = Static<typeof ConfigFile>;
export type PoolSection = Static<typeof PoolSection>;
export type EipPoolSection = Static<typeof EipPoolSection>;
export type ProjectSection = Static<typeof ProjectSection>;
export type HostSection = Static<typeof HostSection>;
export type StoreSection = Static<typeof StoreSection>;
