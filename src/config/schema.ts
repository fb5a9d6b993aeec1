/**
 * The shape of the TOML configuration file, as TypeBox schemas. Semantic checks that span
 * fields (gateway inside the CIDR, pools not overlapping, …) live in `validate.ts`.
 */
import { type Static, Type } from "@sinclair/typebox";

export const POOL_NAME_PATTERN = "^[a-z0-9][a-z0-9_-]{0,62}$";

export const PoolSection = Type.Object(
  {
    name: Type.String({ pattern: POOL_NAME_PATTERN, description: "lower-case letters, digits, - and _" }),
    cidr: Type.String({ description: "an IPv4 network a.b.c.d/n, n from 8 to 32" }),
    gateway: Type.Optional(Type.String()),
    reserved: Type.Optional(Type.Array(Type.String(), { maxItems: 4096 })),
    strategy: Type.Optional(Type.Union([Type.Literal("next-fit"), Type.Literal("lowest")])),
    default: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

export const ServerSection = Type.Object(
  {
    listen: Type.Optional(Type.String({ description: 'host:port, or "" to turn TCP off' })),
    socket: Type.Optional(Type.String({ description: 'Unix socket path, or "" to turn it off' })),
    data_dir: Type.Optional(Type.String({ minLength: 1 })),
    log_format: Type.Optional(Type.Union([Type.Literal("text"), Type.Literal("json")])),
    log_level: Type.Optional(
      Type.Union([Type.Literal("debug"), Type.Literal("info"), Type.Literal("warn"), Type.Literal("error")]),
    ),
  },
  { additionalProperties: false },
);

export const ConfigFile = Type.Object(
  {
    server: Type.Optional(ServerSection),
    pools: Type.Optional(Type.Array(PoolSection, { minItems: 1, maxItems: 256 })),
  },
  { additionalProperties: false },
);

export type ConfigFile = Static<typeof ConfigFile>;
export type PoolSection = Static<typeof PoolSection>;
