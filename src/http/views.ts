/** Domain objects → wire shapes (snake_case, dotted quads, the original API's field names). */
import { formatIpv4, formatRange } from "../net/ipv4.ts";
import type { Allocation } from "../pool/allocator.ts";
import type { PoolLayout } from "../pool/layout.ts";
import type { PoolService, PoolStats } from "../pool/service.ts";
import type { Writable } from "../writable.ts";
import type { AllocationView, StatsView } from "./schemas.ts";

/** Built field by field, in the order the original answered them: this runs for every allocation. */
export function allocationView(allocation: Allocation, layout: PoolLayout): AllocationView {
  // Filled in below, in the original's field order.
  const view = { ip: formatIpv4(allocation.ip), vm_id: allocation.vmId } as Writable<AllocationView>;
  if (allocation.hostname !== undefined) view.hostname = allocation.hostname;
  if (allocation.name !== undefined) view.name = allocation.name;
  if (allocation.host !== undefined) view.host = allocation.host;
  if (allocation.nic !== undefined) {
    view.interface = { mac: allocation.nic.mac, [allocation.nic.link.kind]: allocation.nic.link.name };
  }
  view.pool = allocation.pool;
  if (layout.gatewayText !== null) view.gateway = layout.gatewayText;
  view.network = layout.network;
  view.created_at = new Date(allocation.createdAt).toISOString();
  return view;
}

export function statsView(stats: PoolStats): StatsView {
  const { gateway, ...rest } = stats;
  return { ...rest, ...(gateway === null ? {} : { gateway }) };
}

export async function poolView(pools: PoolService, layout: PoolLayout) {
  return {
    name: layout.name,
    network: layout.network,
    ...(layout.gatewayText === null ? {} : { gateway: layout.gatewayText }),
    strategy: layout.strategy,
    default: layout.name === pools.defaultPool,
    reserved: layout.reserved.map(formatRange),
    stats: statsView(await pools.stats(layout.name)),
  };
}
