/** The IP Pool API (`/api/v1/...`): the original seven endpoints plus pool listing. */
import { type Static, Type } from "@sinclair/typebox";
import { Elysia } from "elysia";
import type { AdminGate } from "../auth/admin.ts";
import type { Nic } from "../dhcp/link.ts";
import { parseIpv4 as parseIp } from "../net/ipv4.ts";
import type { PoolService } from "../pool/service.ts";
import { adminErrors, admitAdmin } from "./admin-gate.ts";
import { streamedList } from "./list-stream.ts";
import {
  AllocateBody,
  AllocationView,
  HealthView,
  type Interface,
  IpParams,
  ListQuery,
  PoolParams,
  PoolQuery,
  PoolView,
  ReleaseQuery,
  ReleaseView,
  StatsView,
  VmIdParams,
} from "./schemas.ts";
import { allocationView, poolView, statsView } from "./views.ts";

export function poolRoutes(pools: PoolService, gate: AdminGate) {
  const view = (allocation: Parameters<typeof allocationView>[0]) =>
    allocationView(allocation, pools.layout(allocation.pool));
  return (
    new Elysia({ prefix: "/api/v1" })
      .get("/health", () => ({ status: "healthy" as const }), { response: HealthView })
      // Every route after this one: the admin key over a non-loopback TCP listener, checked before
      // the request is validated, so a caller without it learns nothing about its request.
      .onTransform(({ request }) => admitAdmin(request, gate))
      .post(
        "/ip/allocate",
        async ({ body, set }) => {
          const { allocation, created } = await pools.allocate({
            vmId: body.vm_id,
            ...(body.hostname == null ? {} : { hostname: body.hostname }),
            ...(body.name === undefined ? {} : { name: body.name }),
            ...(body.host === undefined ? {} : { host: body.host }),
            ...(body.pool === undefined ? {} : { pool: body.pool }),
            ...(body.ip === undefined ? {} : { ip: parseIp(body.ip) }),
            ...(body.interfaces === undefined ? {} : { nics: body.interfaces.map(nicOf) }),
            ...(body.adopt === undefined ? {} : { adopt: body.adopt }),
          });
          // 201 every time, as the original answered (its clients check for it); a header tells a
          // repeat apart for those who want to know, and original clients ignore it.
          set.status = 201;
          set.headers["x-ippool-created"] = created ? "true" : "false";
          return view(allocation);
        },
        {
          body: AllocateBody,
          detail: {
            description: "201 for a new allocation and for a repeat; X-Ippool-Created: true or false tells them apart",
          },
          response: {
            201: AllocationView,
            ...adminErrors(
              "INVALID_IP",
              "POOL_NOT_FOUND",
              "ADDRESS_IN_USE",
              "VM_HAS_OTHER_ADDRESS",
              "POOL_EXHAUSTED",
              "DHCP_RESERVATION_FAILED",
              "STORAGE_FULL",
            ),
          },
        },
      )
      .get(
        "/ip/allocations",
        ({ query, set }) => {
          const { limit, ...rest } = query;
          // Without a limit, the whole list: streamed a page at a time (list-stream.ts).
          if (limit === undefined) return streamedList(pools, rest);
          // Typed apart from the return: inferred there, it would be one promise of both answers,
          // which Elysia's handler type does not take.
          const page = pools.list({ ...rest, limit: Number(limit) }).then((listed) => {
            if (listed.next !== undefined) set.headers["x-next-after"] = listed.next;
            return listed.items.map(view);
          });
          return page;
        },
        {
          query: ListQuery,
          response: { 200: Type.Array(AllocationView), ...adminErrors("INVALID_IP", "POOL_NOT_FOUND") },
        },
      )
      .get("/ip/stats", async ({ query }) => statsView(await pools.stats(query.pool)), {
        query: PoolQuery,
        response: { 200: StatsView, ...adminErrors("POOL_NOT_FOUND") },
      })
      .delete(
        "/ip/release/:vm_id",
        async ({ params, query }) => {
          const released = await pools.release(params.vm_id, query.pool, {
            ...(query.host === undefined ? {} : { fromHost: query.host }),
          });
          return { message: "IP released successfully", vm_id: params.vm_id, released: released.map(view) };
        },
        {
          params: VmIdParams,
          query: ReleaseQuery,
          response: {
            200: ReleaseView,
            ...adminErrors("NOT_FOUND", "POOL_NOT_FOUND", "VM_ON_OTHER_HOST", "STORAGE_FULL"),
          },
        },
      )
      .delete(
        "/ip/release-by-ip/:ip",
        async ({ params }) => {
          const released = await pools.releaseByIp(params.ip);
          return { message: "IP released successfully", ip: params.ip, released: [view(released)] };
        },
        { params: IpParams, response: { 200: ReleaseView, ...adminErrors("INVALID_IP", "NOT_FOUND", "STORAGE_FULL") } },
      )
      .get("/ip/:vm_id", async ({ params, query }) => view(await pools.get(params.vm_id, query.pool)), {
        params: VmIdParams,
        query: PoolQuery,
        response: { 200: AllocationView, ...adminErrors("NOT_FOUND", "POOL_NOT_FOUND") },
      })
      .get("/pools", () => Promise.all(pools.layouts.map((layout) => poolView(pools, layout))), {
        response: { 200: Type.Array(PoolView), ...adminErrors() },
      })
      .get("/pools/:name", ({ params }) => poolView(pools, pools.layout(params.name)), {
        params: PoolParams,
        response: { 200: PoolView, ...adminErrors("POOL_NOT_FOUND") },
      })
  );
}

/** A NIC from the wire: its MAC in lower case, as dnsmasq and libvirt print it. */
function nicOf(wire: Static<typeof Interface>): Nic {
  const mac = wire.mac.toLowerCase();
  return "network" in wire
    ? { mac, link: { kind: "network", name: wire.network } }
    : { mac, link: { kind: "bridge", name: wire.bridge } };
}
