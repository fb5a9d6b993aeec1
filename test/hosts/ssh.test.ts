/** SshConnection and HostRegistry against real OpenSSH servers in the testbed. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  HostCommandFailedError,
  HostConfigError,
  HostKeyMismatchError,
  HostUnavailableError,
  InvalidCommandArgumentError,
} from "../../src/hosts/errors.ts";
import { HostRegistry } from "../../src/hosts/registry.ts";
import { sh } from "../support/processes.ts";
import { Testbed } from "../support/testbed.ts";
import { connectedRegistry, FAST } from "./helpers.ts";

let bed: Testbed;
let registry: HostRegistry;

beforeAll(async () => {
  bed = await Testbed.create({ hosts: [{ name: "hv1" }, { name: "hv2" }] });
  registry = await connectedRegistry(bed);
});

afterAll(async () => {
  await registry?.close();
  await bed?.destroy();
});

describe("SshConnection", () => {
  test("connects with the pinned key and runs commands in the host's namespace", async () => {
    const hv1 = registry.get("hv1")?.connection;
    expect(hv1?.connected).toBe(true);
    const result = await hv1?.exec(["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    expect(result?.code).toBe(0);
    expect(result?.stdout).toContain("10.77.0.11/24");
    const hv2 = await registry.get("hv2")?.connection.exec(["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
    expect(hv2?.stdout).toContain("10.77.0.12/24");
  });

  test("passes arguments verbatim, stdin through, and reports exit status and stderr", async () => {
    const connection = registry.get("hv1")?.connection;
    if (!connection) throw new Error("no hv1");
    const hostile = ["a'b", "$(reboot)", "; rm -rf /", "two\nlines", ""];
    const echoed = await connection.exec(["printf", "%s|", ...hostile]);
    expect(echoed.stdout).toBe(`${hostile.join("|")}|`);
    expect((await connection.exec(["cat"], { stdin: "from stdin\n" })).stdout).toBe("from stdin\n");
    expect((await connection.exec(["cat"])).stdout).toBe(""); // stdin is closed, nothing waits
    const failed = await connection.exec(["sh", "-c", "echo oops >&2; echo more >&2; exit 3"]);
    expect(failed).toMatchObject({ code: 3, stderr: "oops\nmore\n" });
    const error = await connection.run(["sh", "-c", "echo oops >&2; exit 3"]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HostCommandFailedError);
    expect((error as HostCommandFailedError).message).toBe(
      'host hv1: `sh -c "echo oops >&2; exit 3"` exited with status 3: oops',
    );
    expect((error as HostCommandFailedError).status).toBe(502);
    expect((error as HostCommandFailedError).code).toBe("HOST_COMMAND_FAILED");
    await expect(connection.exec(["a\0b"])).rejects.toBeInstanceOf(InvalidCommandArgumentError);
  });

  test("runs many commands at once on one connection (more than sshd's session limit)", async () => {
    const connection = registry.get("hv1")?.connection;
    const started = performance.now();
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => connection?.exec(["echo", String(i)]).then((r) => r.stdout.trim())),
    );
    expect(results).toEqual(Array.from({ length: 30 }, (_, i) => String(i)));
    expect(performance.now() - started).toBeLessThan(3000);
  });

  test("a hung command hits its timeout, is killed on the host, and the connection serves the next one", async () => {
    const connection = registry.get("hv1")?.connection;
    const started = performance.now();
    const error = await connection?.exec(["sleep", "37.5"], { timeoutMs: 300 }).catch((e: unknown) => e);
    const elapsed = performance.now() - started;
    expect(error).toBeInstanceOf(HostCommandFailedError);
    expect((error as Error).message).toBe("host hv1: `sleep 37.5` timed out after 300 ms");
    expect(elapsed).toBeGreaterThanOrEqual(295);
    expect(elapsed).toBeLessThan(1000);
    expect(connection?.connected).toBe(true);
    expect((await connection?.exec(["echo", "next"]))?.stdout).toBe("next\n");
    // The remote process does not outlive the timeout by more than its grace period.
    let left = "";
    for (let i = 0; i < 40; i++) {
      left = (await sh(["pgrep", "-f", "sleep 37.5"], { allowFail: true })).stdout.trim();
      if (!left) break;
      await Bun.sleep(50);
    }
    expect(left).toBe("");
  });

  test("a wrong pinned host key is refused and reported; commands fail fast", async () => {
    const wrong = new HostRegistry(
      (await bed.localHostDefinitions()).map((d) =>
        d.name === "hv1" ? { ...d, hostKey: bed.host("hv2").hostKey } : d,
      ),
      { tuning: FAST },
    );
    const accepted = async () =>
      (await Bun.file(join(bed.dir, "hv1", "sshd.log")).text()).split("Accepted publickey").length;
    const acceptedBefore = await accepted();
    try {
      wrong.start();
      const hv1 = wrong.get("hv1")?.connection;
      if (!hv1) throw new Error("no hv1");
      await waitUntil(() => hv1.lastError instanceof HostKeyMismatchError, 3000);
      const waited = await hv1.waitConnected(100).catch((e: unknown) => e);
      expect(waited).toBeInstanceOf(HostKeyMismatchError);
      expect(hv1.connected).toBe(false);
      expect(hv1.lastError).toBeInstanceOf(HostKeyMismatchError);
      const message = hv1.lastError?.message ?? "";
      expect(message).toContain(`presented host key ${bed.host("hv1").hostKey}`);
      expect(message).toContain(`not the pinned ${bed.host("hv2").hostKey}`);
      const started = performance.now();
      const error = await hv1.exec(["true"]).catch((e: unknown) => e);
      // Refused at once, not after a connect attempt (the connect timeout here is seconds).
      expect(performance.now() - started).toBeLessThan(500);
      expect(error).toBeInstanceOf(HostKeyMismatchError);
      expect(error).toBeInstanceOf(HostUnavailableError);
      expect((error as HostKeyMismatchError).status).toBe(502);
      expect((error as HostKeyMismatchError).code).toBe("HOST_KEY_MISMATCH");
      // The other host, pinned right, is fine.
      await wrong.get("hv2")?.connection.waitConnected(3000);
      // The client gave up during key exchange: it never authenticated to the impostor.
      expect(await accepted()).toBe(acceptedBefore);
    } finally {
      await wrong.close();
    }
  });

  test("a command on a connection that is not open fails fast with HostUnavailableError", async () => {
    const idle = new HostRegistry(await bed.localHostDefinitions(), { tuning: FAST });
    const error = await idle
      .get("hv1")
      ?.connection.exec(["true"])
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HostUnavailableError);
    expect((error as HostUnavailableError).code).toBe("HOST_UNAVAILABLE");
    expect((error as Error).message).toContain("host hv1: not connected");
    await idle.close();
    const closed = await idle
      .get("hv1")
      ?.connection.exec(["true"])
      .catch((e: unknown) => e);
    expect(closed).toBeInstanceOf(HostUnavailableError);
  });

  test("a command issued while the first connection attempt is under way waits for it and runs", async () => {
    const fresh = new HostRegistry(await bed.localHostDefinitions(), { tuning: FAST });
    try {
      fresh.start();
      const hv1 = fresh.get("hv1")?.connection;
      expect(hv1?.connected).toBe(false);
      const result = await hv1?.exec(["echo", "first"]);
      expect(result?.stdout).toBe("first\n");
    } finally {
      await fresh.close();
    }
  });

  test("a command waiting on a first attempt that fails answers HostUnavailableError with its cause", async () => {
    const refused = new HostRegistry(
      (await bed.localHostDefinitions()).map((d) => ({ ...d, address: "127.0.0.1", port: 1 })),
      { tuning: FAST },
    );
    try {
      refused.start();
      const error = await refused
        .get("hv1")
        ?.connection.exec(["true"])
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(HostUnavailableError);
      expect((error as Error).message).toContain("ECONNREFUSED");
    } finally {
      await refused.close();
    }
  });

  test("reconnects by itself after sshd goes away and comes back", async () => {
    const host = registry.get("hv2");
    if (!host) throw new Error("no hv2");
    const events: string[] = [];
    const offDown = host.connection.onDisconnect(() => events.push("down"));
    const offUp = host.connection.onConnect(() => events.push("up"));
    try {
      await bed.stopSshd("hv2");
      await waitUntil(() => !host.connected, 3000);
      expect(events).toEqual(["down"]);
      const error = await host.connection.exec(["true"]).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(HostUnavailableError);
      expect(host.connection.lastError).toBeInstanceOf(HostUnavailableError);
      await Bun.sleep(600); // a few failed attempts: the backoff grows to its 400 ms cap
      await bed.startSshd("hv2");
      const started = performance.now();
      await host.connection.waitConnected(3000);
      expect(performance.now() - started).toBeLessThan(1500);
      expect(events).toEqual(["down", "up"]);
      expect(host.connection.lastError).toBeNull();
      expect((await host.connection.exec(["echo", "back"])).stdout).toBe("back\n");
    } finally {
      offDown();
      offUp();
    }
  });

  test("a command running when the connection drops fails with HostUnavailableError", async () => {
    const host = registry.get("hv2");
    if (!host) throw new Error("no hv2");
    await host.connection.waitConnected(3000);
    const running = host.connection.exec(["sleep", "20"], { timeoutMs: 10_000 }).catch((e: unknown) => e);
    await Bun.sleep(100);
    await bed.stopSshd("hv2");
    const error = await running;
    expect(error).toBeInstanceOf(HostUnavailableError);
    expect((error as Error).message).toContain("connection dropped");
    await bed.startSshd("hv2");
    await host.connection.waitConnected(3000);
  });
});

describe("HostRegistry", () => {
  test("checks every private key file when it is built", async () => {
    const definitions = await bed.localHostDefinitions();
    const first = definitions[0];
    if (!first) throw new Error("no host");
    const build = (path: string) => () =>
      new HostRegistry([first, { ...first, name: "other", privateKeyPath: path }], { tuning: FAST });
    const missing = join(bed.dir, "no-such-key");
    expect(build(missing)).toThrow(HostConfigError);
    expect(build(missing)).toThrow(`hosts[1].private_key: ${missing} does not exist`);
    const open = join(bed.dir, "open-key");
    copyFileSync(first.privateKeyPath, open);
    chmodSync(open, 0o644);
    expect(build(open)).toThrow(`hosts[1].private_key: ${open} has mode 0644; a private key must be mode 0600`);
    chmodSync(open, 0o640);
    expect(build(open)).toThrow(/has mode 0640/);
    const garbage = join(bed.dir, "garbage-key");
    writeFileSync(garbage, "not a key\n", { mode: 0o600 });
    expect(build(garbage)).toThrow(/hosts\[1\]\.private_key: .* is not a usable private key/);
    expect(build(bed.dir)).toThrow(/is not a regular file/);
    const error = (() => {
      try {
        build(missing)();
      } catch (e) {
        return e as HostConfigError;
      }
    })();
    expect(error?.code).toBe("CONFIG_INVALID");
  });

  test("start() returns at once even when a host cannot be reached", async () => {
    const definitions = await bed.localHostDefinitions();
    const unreachable = {
      ...(definitions[0] as (typeof definitions)[0]),
      name: "gone",
      port: 1,
      connectTimeoutMs: 500,
    };
    const slow = new HostRegistry([unreachable], { tuning: FAST });
    const started = performance.now();
    slow.start();
    // start() does not wait for the connection (whose timeout is 500 ms).
    expect(performance.now() - started).toBeLessThan(400);
    await Bun.sleep(100);
    expect(slow.get("gone")?.connected).toBe(false);
    expect(slow.get("gone")?.connection.lastError).toBeInstanceOf(HostUnavailableError);
    await slow.close();
  });

  test("an instance looked up right after start() is asked of hosts still on their first attempt", async () => {
    const fresh = new HostRegistry(await bed.localHostDefinitions(), { tuning: FAST });
    try {
      fresh.start();
      // Every host answers that it has no such domain; none is skipped as "not connected".
      expect(await fresh.findInstance("no-such-domain")).toBeNull();
    } finally {
      await fresh.close();
    }
  });

  test("get, all and close", async () => {
    expect(registry.all().map((h) => h.name)).toEqual(["hv1", "hv2"]);
    expect(registry.get("hv1")?.definition.publicInterface).toBe("eth0");
    expect(registry.get("nope")).toBeUndefined();
  });
});

async function waitUntil(check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error("condition not met in time");
    await Bun.sleep(10);
  }
}
