/**
 * Leak detection (`/api/v1/leaks`): allocations whose VM no configured host has. GET reports,
 * POST `/release` reports and releases. A check that cannot ask every host answers 503
 * `LEAK_CHECK_INCOMPLETE` and releases nothing.
 */
import { Elysia } from "elysia";
import type { AdminGate } from "../auth/admin.ts";
import type { Allocation } from "../pool/allocator.ts";
import type { LeakDetector, LeakReport } from "../pool/leaks.ts";
import type { PoolService } from "../pool/service.ts";
import { adminErrors, admitAdmin } from "./admin-gate.ts";
import { LeakQuery, LeakReportView as LeakReportSchema, type LeakReportView } from "./leak-schemas.ts";
import { allocationView } from "./views.ts";

export function leakRoutes(leaks: LeakDetector, pools: PoolService, gate: AdminGate) {
  const view = (allocation: Allocation) => allocationView(allocation, pools.layout(allocation.pool));
  const report = (found: LeakReport): LeakReportView => ({
    checked_at: new Date(found.checkedAt).toISOString(),
    grace_period_s: found.gracePeriodS,
    hosts: found.hosts.map(({ host, domains }) => ({ name: host, domains })),
    leaks: found.leaks.map(({ allocation, ageMs }) => ({
      ...view(allocation),
      age_s: Math.floor(ageMs / 1000),
    })),
    ...(found.released === undefined ? {} : { released: found.released.map(view) }),
    ...(found.reason === undefined ? {} : { reason: found.reason }),
  });
  const response = { 200: LeakReportSchema, ...adminErrors("POOL_NOT_FOUND", "LEAK_CHECK_INCOMPLETE") };
  const releasing = { ...response, ...adminErrors("POOL_NOT_FOUND", "LEAK_CHECK_INCOMPLETE", "STORAGE_FULL") };
  return new Elysia({ prefix: "/api/v1/leaks" })
    .onTransform(({ request }) => admitAdmin(request, gate))
    .get("", async ({ query }) => report(await leaks.check(query.pool)), { query: LeakQuery, response })
    .post("/release", async ({ query }) => report(await leaks.release(query.pool)), {
      query: LeakQuery,
      response: releasing,
    });
}
