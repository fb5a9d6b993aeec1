import { describe, expect, test } from "bun:test";
import { type Association, type HostNatState, isEmptyPlan, planConvergence } from "../../../src/hosts/nft-plan.ts";
import { parseCidr } from "../../../src/net/ipv4.ts";

const RANGES = [parseCidr("100.64.0.0/24")];
const A: Association = { eip: "100.64.0.5", privateIp: "192.168.100.11" };
const B: Association = { eip: "100.64.0.6", privateIp: "192.168.100.12" };
const C: Association = { eip: "100.64.0.7", privateIp: "192.168.100.21" };

const EMPTY: HostNatState = { dnat: [], snat: [], addresses: [] };

/** The state of a host that applies exactly these associations. */
function applied(...associations: Association[]): HostNatState {
  return { dnat: associations, snat: associations, addresses: associations.map((a) => a.eip) };
}

describe("planConvergence", () => {
  test("empty to empty changes nothing", () => {
    const plan = planConvergence([], EMPTY, RANGES);
    expect(isEmptyPlan(plan)).toBe(true);
    expect(plan).toMatchObject({ added: [], removed: [], changed: [], conntrackFlush: [] });
  });

  test("full to full (in sync) changes nothing", () => {
    const plan = planConvergence([A, B], applied(B, A), RANGES);
    expect(isEmptyPlan(plan)).toBe(true);
    expect(plan.added).toEqual([]);
  });

  test("empty host (e.g. after a reboot) gets everything added", () => {
    const plan = planConvergence([A, B], EMPTY, RANGES);
    expect(plan.added).toEqual([A, B]);
    expect(plan.dnatAdd).toEqual([A, B]);
    expect(plan.snatAdd).toEqual([A, B]);
    expect(plan.addressAdd).toEqual([A.eip, B.eip]);
    expect(plan.dnatDelete).toEqual([]);
    expect(plan.snatDelete).toEqual([]);
    expect(plan.removed).toEqual([]);
    expect(plan.conntrackFlush).toEqual([]);
  });

  test("full host with nothing desired gets everything removed and its flows flushed", () => {
    const plan = planConvergence([], applied(A, B), RANGES);
    expect(plan.removed).toEqual([
      { eip: A.eip, privateIp: A.privateIp },
      { eip: B.eip, privateIp: B.privateIp },
    ]);
    expect(plan.dnatDelete).toEqual([A.eip, B.eip]);
    expect(plan.snatDelete).toEqual([A.privateIp, B.privateIp]);
    expect(plan.addressDelete).toEqual([A.eip, B.eip]);
    expect(plan.conntrackFlush).toEqual([A.eip, B.eip]);
    expect(plan.added).toEqual([]);
  });

  test("a changed private IP replaces both elements and flushes the EIP's flows", () => {
    const moved = { eip: A.eip, privateIp: "192.168.100.99" };
    const plan = planConvergence([moved], applied(A), RANGES);
    expect(plan.changed).toEqual([{ eip: A.eip, from: A.privateIp, to: moved.privateIp }]);
    expect(plan.added).toEqual([]);
    expect(plan.removed).toEqual([]);
    expect(plan.dnatDelete).toEqual([A.eip]);
    expect(plan.dnatAdd).toEqual([moved]);
    expect(plan.snatDelete).toEqual([A.privateIp]);
    expect(plan.snatAdd).toEqual([moved]);
    expect(plan.addressAdd).toEqual([]);
    expect(plan.addressDelete).toEqual([]);
    expect(plan.conntrackFlush).toEqual([A.eip]);
  });

  test("a stale association (left while the host was down) is removed; the desired ones stay", () => {
    const plan = planConvergence([A], applied(A, C), RANGES);
    expect(plan.removed).toEqual([{ eip: C.eip, privateIp: C.privateIp }]);
    expect(plan.dnatDelete).toEqual([C.eip]);
    expect(plan.snatDelete).toEqual([C.privateIp]);
    expect(plan.addressDelete).toEqual([C.eip]);
    expect(plan.conntrackFlush).toEqual([C.eip]);
    expect(plan.added).toEqual([]);
    expect(plan.dnatAdd).toEqual([]);
  });

  test("an address without rules: desired gets its rules, undesired loses the address", () => {
    const plan = planConvergence([A], { dnat: [], snat: [], addresses: [A.eip, B.eip] }, RANGES);
    expect(plan.added).toEqual([A]);
    expect(plan.dnatAdd).toEqual([A]);
    expect(plan.snatAdd).toEqual([A]);
    expect(plan.addressAdd).toEqual([]);
    expect(plan.removed).toEqual([{ eip: B.eip, privateIp: null }]);
    expect(plan.addressDelete).toEqual([B.eip]);
  });

  test("rules without the address: the address is added back, nothing else", () => {
    const plan = planConvergence([A], { dnat: [A], snat: [A], addresses: [] }, RANGES);
    expect(plan.added).toEqual([A]);
    expect(plan.addressAdd).toEqual([A.eip]);
    expect(plan.dnatAdd).toEqual([]);
    expect(plan.snatAdd).toEqual([]);
    expect(plan.changed).toEqual([]);
  });

  test("half an association (DNAT only) is completed", () => {
    const plan = planConvergence([A], { dnat: [A], snat: [], addresses: [A.eip] }, RANGES);
    expect(plan.added).toEqual([A]);
    expect(plan.snatAdd).toEqual([A]);
    expect(plan.dnatAdd).toEqual([]);
  });

  test("an orphan SNAT element pointing a desired EIP at another VM counts as changed and is removed", () => {
    const orphan = { eip: A.eip, privateIp: "192.168.100.50" };
    const plan = planConvergence([A], { dnat: [A], snat: [A, orphan], addresses: [A.eip] }, RANGES);
    expect(plan.changed).toEqual([{ eip: A.eip, from: orphan.privateIp, to: A.privateIp }]);
    expect(plan.snatDelete).toEqual([orphan.privateIp]);
    expect(plan.snatAdd).toEqual([]);
  });

  test("an EIP swapped between two VMs rewrites all four elements", () => {
    const swappedA = { eip: A.eip, privateIp: B.privateIp };
    const swappedB = { eip: B.eip, privateIp: A.privateIp };
    const plan = planConvergence([swappedA, swappedB], applied(A, B), RANGES);
    expect(plan.changed.map((c) => c.eip)).toEqual([A.eip, B.eip]);
    expect(plan.dnatDelete).toEqual([A.eip, B.eip]);
    expect(plan.snatDelete).toEqual([A.privateIp, B.privateIp]);
    expect(plan.dnatAdd).toEqual([swappedA, swappedB]);
    expect(plan.snatAdd).toEqual([swappedA, swappedB]);
  });

  test("addresses outside the EIP ranges are ignored (the host's own addresses)", () => {
    const state: HostNatState = { dnat: [], snat: [], addresses: ["10.77.0.11", "203.0.113.9", A.eip] };
    const plan = planConvergence([], state, RANGES);
    expect(plan.addressDelete).toEqual([A.eip]);
    expect(plan.removed).toEqual([{ eip: A.eip, privateIp: null }]);
    const none = planConvergence([], { ...state, addresses: ["10.77.0.11", "203.0.113.9"] }, RANGES);
    expect(isEmptyPlan(none)).toBe(true);
  });

  test("with no ranges no address is ever touched, but ippool's elements still are", () => {
    const plan = planConvergence([], applied(A), []);
    expect(plan.addressDelete).toEqual([]);
    expect(plan.dnatDelete).toEqual([A.eip]);
  });

  test("elements outside the ranges are ippool's and are removed when not desired", () => {
    const outside = { eip: "198.51.100.7", privateIp: "192.168.100.11" };
    const plan = planConvergence([], { dnat: [outside], snat: [outside], addresses: [outside.eip] }, RANGES);
    expect(plan.dnatDelete).toEqual([outside.eip]);
    expect(plan.snatDelete).toEqual([outside.privateIp]);
    expect(plan.addressDelete).toEqual([]);
  });

  test("desired associations must be one-to-one", () => {
    expect(() => planConvergence([A, { ...B, eip: A.eip }], EMPTY, RANGES)).toThrow(/appears twice/);
    expect(() => planConvergence([A, { ...B, privateIp: A.privateIp }], EMPTY, RANGES)).toThrow(/appears twice/);
  });
});
