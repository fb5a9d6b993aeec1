/** TypeBox schemas of leak detection (`/api/v1/leaks`). */
import { type Static, Type } from "@sinclair/typebox";
import { AllocationView, PoolName } from "./schemas.ts";

export const LeakQuery = Type.Object({ pool: Type.Optional(PoolName) });

export const LeakView = Type.Object({
  ...AllocationView.properties,
  age_s: Type.Integer({ description: "whole seconds from created_at to checked_at" }),
});
export type LeakView = Static<typeof LeakView>;

export const LeakReportView = Type.Object({
  checked_at: Type.String({ description: "RFC 3339: when the check started" }),
  grace_period_s: Type.Integer({
    description: "allocations younger than this are never leaks ([leaks] grace_period_s)",
  }),
  hosts: Type.Array(
    Type.Object({ name: Type.String(), domains: Type.Integer({ description: "domains the host listed" }) }),
    { description: "every configured host, each asked for its domains" },
  ),
  leaks: Type.Array(LeakView, { description: "allocations whose vm_id is no domain's name or UUID on any host" }),
  released: Type.Optional(
    Type.Array(AllocationView, { description: "POST only: the leaks released (one changed meanwhile is skipped)" }),
  ),
  reason: Type.Optional(Type.String({ description: "why nothing could be compared (no hosts configured)" })),
});
export type LeakReportView = Static<typeof LeakReportView>;
