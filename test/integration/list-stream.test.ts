/**
 * The full allocation list is streamed a page at a time (http/list-stream.ts): one valid JSON
 * array in pool and address order, chunked, that a slow reader can hold open while the daemon
 * serves other requests; `ippool list` pages through a large pool with limit and after.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { poolsToml } from "../support/config-toml.ts";
import { BINARY, Daemon } from "../support/daemon.ts";
import { sh } from "../support/processes.ts";

/** More than three pages of the stream (1,000 each) and of `ippool list` (1,000 each). */
const COUNT = 3500;

let daemon: Daemon;
beforeAll(async () => {
  daemon = await Daemon.start({ config: poolsToml([{ name: "vms", cidr: "10.88.0.0/16" }]) });
  for (let i = 0; i < COUNT; i += 250) {
    const batch = Array.from({ length: 250 }, (_, j) => `vm-${String(i + j).padStart(5, "0")}`);
    const answers = await Promise.all(batch.map((vm) => daemon.post("/api/v1/ip/allocate", { vm_id: vm })));
    expect(answers.every((answer) => answer.status === 201)).toBe(true);
  }
});
afterAll(() => daemon.dispose());

describe("the full allocation list", () => {
  test("is one JSON array of every allocation in address order, sent chunked", async () => {
    const response = await daemon.fetch("/api/v1/ip/allocations");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("application/json;charset=utf-8");
    expect(response.headers.get("content-length")).toBeNull();
    const list = (await response.json()) as { ip: string; vm_id: string }[];
    expect(list).toHaveLength(COUNT);
    expect(list[0]).toMatchObject({ ip: "10.88.0.2", pool: "vms", network: "10.88.0.0/16" });
    const ordinals = list.map((allocation) =>
      allocation.ip.split(".").reduce((n, octet) => n * 256 + Number(octet), 0),
    );
    expect(ordinals.every((value, i) => i === 0 || value > (ordinals[i - 1] as number))).toBe(true);
    expect(new Set(list.map((allocation) => allocation.vm_id)).size).toBe(COUNT);
  });

  test("held open by a slow reader, it does not stop the daemon serving others", async () => {
    const response = await daemon.fetch("/api/v1/ip/allocations");
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    // The list is paused at its first chunk: changes and health answer meanwhile.
    expect((await daemon.post("/api/v1/ip/allocate", { vm_id: "during-the-list" })).status).toBe(201);
    expect((await daemon.json("/api/v1/health")).status).toBe(200);
    expect((await daemon.json("/api/v1/ip/release/during-the-list", { method: "DELETE" })).status).toBe(200);
    const decoder = new TextDecoder();
    let text = decoder.decode(first.value, { stream: true });
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
      text += decoder.decode(chunk.value, { stream: true });
    }
    const list = JSON.parse(text) as { vm_id: string }[];
    expect(list.filter((allocation) => allocation.vm_id.startsWith("vm-"))).toHaveLength(COUNT);
  });

  test("a bad after= still answers its 400 before anything is streamed", async () => {
    const { status, body } = await daemon.json("/api/v1/ip/allocations?after=192.0.2.1");
    expect(status).toBe(400);
    expect(body.code).toBe("INVALID_IP");
  });

  test("ippool list pages through all of it (limit and after), in address order", async () => {
    const run = await sh([BINARY, "list", "--socket", daemon.socket]);
    const rows = run.stdout.trim().split("\n").slice(1);
    expect(rows).toHaveLength(COUNT);
    expect(rows[0]).toStartWith("10.88.0.2 ");
    expect(rows.at(-1)).toStartWith(`10.88.${Math.floor((COUNT + 1) / 256)}.${(COUNT + 1) % 256} `);
  });
});
