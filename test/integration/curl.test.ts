/** The README's curl usage, run with the real curl against TCP and the Unix socket. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { Daemon } from "../support/daemon.ts";

let daemon: Daemon;
beforeAll(async () => {
  daemon = await Daemon.start();
});
afterAll(async () => {
  await daemon.dispose();
});

async function curl(...args: string[]): Promise<{ status: number; body: unknown }> {
  const proc = Bun.spawn(["curl", "-sS", "-w", "\n%{http_code}", ...args], { stdout: "pipe", stderr: "pipe" });
  const output = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  const split = output.lastIndexOf("\n");
  return { status: Number(output.slice(split + 1)), body: JSON.parse(output.slice(0, split)) };
}

test("curl allocates over TCP exactly as the original README shows", async () => {
  const result = await curl(
    "-X",
    "POST",
    `${daemon.baseUrl}/api/v1/ip/allocate`,
    "-H",
    "Content-Type: application/json",
    "-d",
    '{"vm_id": "srv-abc123", "hostname": "my-vm"}',
  );
  expect(result.status).toBe(201);
  expect(result.body).toMatchObject({ ip: "172.16.0.2", vm_id: "srv-abc123", hostname: "my-vm" });
});

test("curl --unix-socket reads and releases over the socket", async () => {
  const shown = await curl("--unix-socket", daemon.socket, "http://localhost/api/v1/ip/srv-abc123");
  expect(shown.body).toMatchObject({ ip: "172.16.0.2" });
  const released = await curl(
    "--unix-socket",
    daemon.socket,
    "-X",
    "DELETE",
    "http://localhost/api/v1/ip/release/srv-abc123",
  );
  expect(released.status).toBe(200);
});
