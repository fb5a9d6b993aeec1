/**
 * What must change on a host so its NAT state matches the recorded associations. Pure: takes the
 * state read from the host and the desired associations, returns the element, address and
 * conntrack changes plus a summary (added / removed / changed) for logs and metrics.
 *
 * Everything in ippool's nftables maps is ippool's, so stale elements are removed wherever their
 * addresses lie. Addresses on the public interface are only considered inside the EIP ranges: the
 * interface carries other addresses (the host's own) that are never touched.
 */
import { type Cidr, cidrContains, parseIpv4 } from "../net/ipv4.ts";

export interface Association {
  readonly eip: string;
  readonly privateIp: string;
}

/** A host's NAT state as read from it. */
export interface HostNatState {
  /** Elements of `eip_dnat` (EIP → private IP). */
  readonly dnat: readonly Association[];
  /** Elements of `eip_snat` (private IP → EIP), written as associations. */
  readonly snat: readonly Association[];
  /** /32 addresses on the public interface (already limited to the EIP ranges by the reader, or not). */
  readonly addresses: readonly string[];
}

export interface ChangedAssociation {
  readonly eip: string;
  /** The private IP the host had for the EIP (from eip_dnat, else from eip_snat). */
  readonly from: string;
  readonly to: string;
}

export interface RemovedAssociation {
  readonly eip: string;
  /** The private IP the host had for it, or null when only the address was left. */
  readonly privateIp: string | null;
}

export interface NatPlan {
  /** Desired associations the host lacked in whole or in part (and did not have pointing elsewhere). */
  readonly added: Association[];
  /** EIPs the host had (element or address) that are not desired. */
  readonly removed: RemovedAssociation[];
  /** Desired EIPs the host had pointing at another private IP. */
  readonly changed: ChangedAssociation[];
  /** Keys (EIPs) to delete from eip_dnat, then elements to add. */
  readonly dnatDelete: string[];
  readonly dnatAdd: Association[];
  /** Keys (private IPs) to delete from eip_snat, then elements to add. */
  readonly snatDelete: string[];
  readonly snatAdd: Association[];
  readonly addressAdd: string[];
  readonly addressDelete: string[];
  /** EIPs whose conntrack entries must go (removed or changed). */
  readonly conntrackFlush: string[];
}

/** Throws if two desired associations share an EIP or a private IP (one EIP per instance, one instance per EIP). */
export function checkDesired(desired: readonly Association[]): void {
  const eips = new Set<string>();
  const privates = new Set<string>();
  for (const { eip, privateIp } of desired) {
    if (eips.has(eip)) throw new Error(`EIP ${eip} appears twice in the desired associations`);
    if (privates.has(privateIp)) throw new Error(`private IP ${privateIp} appears twice in the desired associations`);
    eips.add(eip);
    privates.add(privateIp);
  }
}

export function planConvergence(
  desired: readonly Association[],
  actual: HostNatState,
  eipRanges: readonly Cidr[],
): NatPlan {
  checkDesired(desired);
  const inRanges = (ip: string) => eipRanges.some((cidr) => cidrContains(cidr, parseIpv4(ip)));
  const want = new Map(desired.map((a) => [a.eip, a.privateIp]));
  const wantSnat = new Map(desired.map((a) => [a.privateIp, a.eip]));
  const dnat = new Map(actual.dnat.map((a) => [a.eip, a.privateIp]));
  const snat = new Map(actual.snat.map((a) => [a.privateIp, a.eip]));
  const addresses = new Set(actual.addresses.filter(inRanges));

  const dnatDelete = [...dnat].filter(([eip, p]) => want.get(eip) !== p).map(([eip]) => eip);
  const dnatAdd = desired.filter((a) => dnat.get(a.eip) !== a.privateIp);
  const snatDelete = [...snat].filter(([p, eip]) => wantSnat.get(p) !== eip).map(([p]) => p);
  const snatAdd = desired.filter((a) => snat.get(a.privateIp) !== a.eip);
  const addressAdd = desired.filter((a) => !addresses.has(a.eip)).map((a) => a.eip);
  const addressDelete = [...addresses].filter((eip) => !want.has(eip));

  // Every private IP the host associates with each EIP, from either map.
  const related = new Map<string, Set<string>>();
  const relate = (eip: string, privateIp: string) => {
    const set = related.get(eip) ?? new Set<string>();
    set.add(privateIp);
    related.set(eip, set);
  };
  for (const [eip, p] of dnat) relate(eip, p);
  for (const [p, eip] of snat) relate(eip, p);

  const added: Association[] = [];
  const changed: ChangedAssociation[] = [];
  for (const a of desired) {
    const others = [...(related.get(a.eip) ?? [])].filter((p) => p !== a.privateIp);
    const complete = dnat.get(a.eip) === a.privateIp && snat.get(a.privateIp) === a.eip && addresses.has(a.eip);
    if (others.length > 0) {
      const from = dnat.get(a.eip);
      changed.push({
        eip: a.eip,
        from: from !== undefined && from !== a.privateIp ? from : (others[0] as string),
        to: a.privateIp,
      });
    } else if (!complete) {
      added.push(a);
    }
  }
  const removed: RemovedAssociation[] = [];
  const seen = new Set<string>();
  for (const eip of [...dnat.keys(), ...snat.values(), ...addresses]) {
    if (want.has(eip) || seen.has(eip)) continue;
    seen.add(eip);
    const privateIp = dnat.get(eip) ?? [...(related.get(eip) ?? [])][0] ?? null;
    removed.push({ eip, privateIp });
  }
  return {
    added,
    removed,
    changed,
    dnatDelete,
    dnatAdd,
    snatDelete,
    snatAdd,
    addressAdd,
    addressDelete,
    conntrackFlush: [...removed.map((r) => r.eip), ...changed.map((c) => c.eip)],
  };
}

/** True when the plan changes nothing on the host. */
export function isEmptyPlan(plan: NatPlan): boolean {
  return (
    plan.dnatDelete.length +
      plan.dnatAdd.length +
      plan.snatDelete.length +
      plan.snatAdd.length +
      plan.addressAdd.length +
      plan.addressDelete.length ===
    0
  );
}
