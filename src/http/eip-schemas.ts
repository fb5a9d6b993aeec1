/** TypeBox schemas of the Elastic IP API. */
import { type Static, Type } from "@sinclair/typebox";
import { Ipv4, PoolName } from "./schemas.ts";

export const EipId = Type.String({
  pattern: "^eip-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
  description: "an elastic IP id, eip-<uuid>",
});
/** A libvirt domain name or UUID. */
export const InstanceId = Type.String({
  pattern: "^[A-Za-z0-9][A-Za-z0-9_.+:-]{0,199}$",
  description: "a libvirt domain name or UUID",
});
const IdempotencyKey = Type.String({
  pattern: "^[\\x21-\\x7e]{1,128}$",
  description: "1 to 128 printable ASCII characters",
});
const EipStateName = Type.Union([Type.Literal("allocated"), Type.Literal("associated")]);

export const EipAllocateBody = Type.Optional(
  Type.Object({ pool: Type.Optional(PoolName), idempotency_key: Type.Optional(IdempotencyKey) }),
);
export type EipAllocateBody = Static<typeof EipAllocateBody>;

export const EipParams = Type.Object({ id: EipId });
export const AssociateBody = Type.Object({
  instance_id: InstanceId,
  allow_reassociation: Type.Optional(Type.Boolean()),
});
export const EipListQuery = Type.Object({
  state: Type.Optional(EipStateName),
  instance_id: Type.Optional(InstanceId),
});

export const EipView = Type.Object({
  id: EipId,
  public_ip: Ipv4,
  project: Type.String(),
  pool: Type.String(),
  state: Type.Union([EipStateName, Type.Literal("released")]),
  created_at: Type.String({ description: "RFC 3339" }),
  instance_id: Type.Optional(Type.String()),
  host: Type.Optional(Type.String()),
  private_ip: Type.Optional(Ipv4),
  associated_at: Type.Optional(Type.String({ description: "RFC 3339" })),
});
export type EipView = Static<typeof EipView>;
