/** `ippool gc`: the request it makes and how its answer reads. */
import { describe, expect, test } from "bun:test";
import { age, COMMANDS } from "../../../src/cli/client/commands.ts";
import type { DaemonClient } from "../../../src/cli/client/connection.ts";

const gc = COMMANDS.find((command) => command.name === "gc");
if (!gc) throw new Error("no gc command");

test.each([
  [0, "0s"],
  [59, "59s"],
  [900, "15m"],
  [930, "15m30s"],
  [7500, "2h05m"],
  [3 * 86_400 + 4 * 3600 + 59, "3d04h"],
  [-5, "0s"],
])("age(%p) is %p", (seconds, text) => {
  expect(age(seconds)).toBe(text);
});

describe("the request", () => {
  const requested = async (options: Record<string, string | boolean>) => {
    const calls: string[] = [];
    const client = { request: async (method: string, path: string) => calls.push(`${method} ${path}`) };
    await gc.run(client as unknown as DaemonClient, {}, options);
    return calls;
  };

  test("--dry-run asks (GET); without it, releases (POST); --pool narrows either", async () => {
    expect(await requested({ "dry-run": true })).toEqual(["GET /api/v1/leaks"]);
    expect(await requested({})).toEqual(["POST /api/v1/leaks/release"]);
    expect(await requested({ pool: "vms" })).toEqual(["POST /api/v1/leaks/release?pool=vms"]);
  });
});

describe("the human output", () => {
  const leak = { ip: "10.0.0.7", vm_id: "ghost", pool: "vms", host: "hv1", age_s: 3700 };
  const hosts = [{ name: "hv1", domains: 2 }];

  test("a dry run lists the leaks and says nothing was released", () => {
    expect(gc.show({ grace_period_s: 900, hosts, leaks: [leak] })).toBe(
      [
        "checked hv1 (2 domains); grace period 15m",
        "1 leaked (no host has the VM):",
        "IP        VM_ID  POOL  HOST  AGE",
        "10.0.0.7  ghost  vms   hv1   1h01m",
        "dry run: nothing released",
        "",
      ].join("\n"),
    );
  });

  test("a release lists what was released", () => {
    const text = gc.show({ grace_period_s: 900, hosts, leaks: [leak], released: [leak] });
    expect(text).toEndWith(["released 1:", "IP        VM_ID  POOL", "10.0.0.7  ghost  vms", ""].join("\n"));
  });

  test("nothing leaked, and no hosts to compare against", () => {
    expect(gc.show({ grace_period_s: 60, hosts, leaks: [], released: [] })).toBe(
      "checked hv1 (2 domains); grace period 1m\nno leaked allocations\n",
    );
    expect(gc.show({ grace_period_s: 60, hosts: [], leaks: [], reason: "no hosts" })).toBe(
      "no leaked allocations: no hosts\n",
    );
  });
});
