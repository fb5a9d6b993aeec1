/** Domain objects → wire shapes (snake_case, dotted quads, the original API's field names). */
import { formatIpv4, formatRange } from "../net/ipv4.ts";
import type { Allocation } from "../pool/allocator.ts";
import type { PoolLayout } from "../pool/layout.ts";
import type { PoolService, PoolStats } from "../pool/service.ts";
import type { AllocationView, StatsView } from "./schemas.ts";

export function allocationView(allocation: Allocation, layout: PoolLayout): AllocationView {
  return {
    ip: formatIpv4(allocation.ip),
    vm_id: allocation.vmId,
    ...(allocation.hostname === undefined ? {} : { hostname: allocation.hostname }),
    ...(allocation.name === undefined ? {} : { name: allocation.name }),
    ...(allocation.host === undefined ? {} : { host: allocation.host }),
    ...(allocation.nic === undefined
      ? {}
      : { interface: { mac: allocation.nic.mac, [allocation.nic.link.kind]: allocation.nic.link.name } }),
    pool: allocation.pool,
    ...(layout.gateway === null ? {} : { gateway: formatIpv4(layout.gateway) }),
    network: layout.network,
    created_at: new Date(allocation.createdAt).toISOString(),
  };
}

export function statsView(stats: PoolStats): StatsView {
  const { gateway, ...rest } = stats;
  return { ...rest, ...(gateway === null ? {} : { gateway }) };
}

export function poolView(pools: PoolService, layout: PoolLayout) {
  return {
    name: layout.name,
    network: layout.network,
    ...(layout.gateway === null ? {} : { gateway: formatIpv4(layout.gateway) }),
    strategy: layout.strategy,
    default: layout.name === pools.defaultPool,
    reserved: layout.reserved.map(formatRange),
    stats: statsView(pools.stats(layout.name)),
  };
}
