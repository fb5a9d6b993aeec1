/**
 * The smoke subset: run against the compiled binary and, with IPPOOL_DAEMON=deno, against the
 * same source under Deno. Health, allocate, release, restart persistence, the Unix socket.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { Daemon } from "../support/daemon.ts";

const runtime = process.env.IPPOOL_DAEMON === "deno" ? "deno" : "binary";
let daemon: Daemon | undefined;

afterEach(async () => {
  await daemon?.dispose();
  daemon = undefined;
});

describe(`smoke (${runtime})`, () => {
  test("health answers on TCP and on the Unix socket", async () => {
    daemon = await Daemon.start();
    for (const via of ["tcp", "unix"] as const) {
      const { status, body } = await daemon.json("/api/v1/health", { via });
      expect(status).toBe(200);
      expect(body).toEqual({ status: "healthy" });
    }
  });

  test("allocate answers 201 with the original shape, then release frees the address", async () => {
    daemon = await Daemon.start();
    const created = await daemon.post("/api/v1/ip/allocate", { vm_id: "srv-abc123", hostname: "my-vm" });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({
      ip: "172.16.0.2",
      vm_id: "srv-abc123",
      gateway: "172.16.0.1",
      network: "172.16.0.0/24",
      hostname: "my-vm",
    });
    const released = await daemon.json("/api/v1/ip/release/srv-abc123", { method: "DELETE" });
    expect(released.status).toBe(200);
    expect(released.body).toMatchObject({ message: "IP released successfully", vm_id: "srv-abc123" });
    expect((await daemon.json("/api/v1/ip/srv-abc123")).status).toBe(404);
  });

  test("the Unix socket serves the same app as TCP and sees the same state", async () => {
    daemon = await Daemon.start();
    const viaSocket = await daemon.post("/api/v1/ip/allocate", { vm_id: "via-socket" }, "unix");
    expect(viaSocket.status).toBe(201);
    const viaTcp = await daemon.json("/api/v1/ip/via-socket");
    expect(viaTcp.body.ip).toBe(viaSocket.body.ip);
  });

  test("allocations survive a restart with the same addresses", async () => {
    daemon = await Daemon.start();
    const dir = daemon.dir;
    const first = await daemon.post("/api/v1/ip/allocate", { vm_id: "persist-1", hostname: "keeper" });
    const second = await daemon.post("/api/v1/ip/allocate", { vm_id: "persist-2" });
    expect(await daemon.stop()).toBe(0);
    daemon = await Daemon.start({ dir });
    const again = await daemon.json("/api/v1/ip/persist-1");
    expect(again.body).toMatchObject({ ip: first.body.ip, hostname: "keeper" });
    const list = await daemon.json("/api/v1/ip/allocations");
    expect(list.body.map((a: { ip: string }) => a.ip).sort()).toEqual([first.body.ip, second.body.ip].sort());
    // Next-fit continues after the last address handed out before the restart.
    const third = await daemon.post("/api/v1/ip/allocate", { vm_id: "persist-3" });
    expect(third.body.ip).toBe("172.16.0.4");
  });
});
