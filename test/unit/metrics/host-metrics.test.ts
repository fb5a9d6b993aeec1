/** Host metrics: SSH up at scrape time, command latency and failures by program (never its arguments). */
import { describe, expect, test } from "bun:test";
import { Registry } from "prom-client";
import { commandName } from "../../../src/hosts/events.ts";
import { SshConnection } from "../../../src/hosts/ssh-connection.ts";
import { hostMetrics } from "../../../src/metrics/host-metrics.ts";
import { parseExposition, samplesOf, sampleValue } from "../../support/prometheus.ts";

describe("hostMetrics", () => {
  test("host up is read from the connections at every scrape", async () => {
    const registry = new Registry();
    const hosts = [
      { name: "hv1", connected: true },
      { name: "hv2", connected: false },
    ];
    hostMetrics(registry, { hosts: () => hosts });
    let samples = parseExposition(await registry.metrics());
    expect(sampleValue(samples, "ippool_host_up", { host: "hv1" })).toBe(1);
    expect(sampleValue(samples, "ippool_host_up", { host: "hv2" })).toBe(0);
    hosts[1] = { name: "hv2", connected: true };
    samples = parseExposition(await registry.metrics());
    expect(sampleValue(samples, "ippool_host_up", { host: "hv2" })).toBe(1);
  });

  test("commands: latency when they ran, failures by reason", async () => {
    const registry = new Registry();
    const events = hostMetrics(registry, { hosts: () => [] });
    events.command("hv1", "nft", 0.004, null);
    events.command("hv1", "conntrack", 0.003, "exit_status");
    events.command("hv1", "virsh", 10.2, "timeout");
    events.command("hv2", "ip", null, "unavailable");
    const samples = parseExposition(await registry.metrics());
    const count = (host: string, command: string) =>
      sampleValue(samples, "ippool_host_command_duration_seconds_count", { host, command });
    expect(count("hv1", "nft")).toBe(1);
    expect(count("hv1", "conntrack")).toBe(1);
    expect(count("hv1", "virsh")).toBe(1);
    // Never started: no duration.
    expect(samplesOf(samples, "ippool_host_command_duration_seconds_count", { host: "hv2" })).toEqual([]);
    const failures = (command: string, reason: string) =>
      sampleValue(samples, "ippool_host_command_failures_total", { command, reason });
    expect(failures("conntrack", "exit_status")).toBe(1);
    expect(failures("virsh", "timeout")).toBe(1);
    expect(failures("ip", "unavailable")).toBe(1);
    expect(samplesOf(samples, "ippool_host_command_failures_total", { command: "nft" })).toEqual([]);
  });
});

describe("commandName", () => {
  test.each([
    [["nft", "-f", "-"], "nft"],
    [["virsh", "-c", "qemu:///system", "domstate", "web-1"], "virsh"],
    [["sudo", "-n", "conntrack", "-D", "-d", "100.64.0.1"], "conntrack"],
    [["sudo", "arping"], "arping"],
  ])("%j runs %s", (argv, name) => {
    expect(commandName(argv)).toBe(name);
  });
});

describe("an SSH connection reports its commands", () => {
  test("a command on a host that is not connected is reported unavailable, with no duration", async () => {
    const reported: unknown[] = [];
    const connection = new SshConnection({
      name: "hv1",
      address: "127.0.0.1",
      port: 1,
      user: "ippool",
      privateKey: Buffer.from(""),
      hostKey: "SHA256:none",
      connectTimeoutMs: 100,
      commandTimeoutMs: 100,
      events: { command: (...args) => reported.push(args) },
    });
    await expect(connection.exec(["sudo", "-n", "ip", "-j", "addr", "show", "dev", "eth0"])).rejects.toThrow(
      "not connected",
    );
    expect(reported).toEqual([["hv1", "ip", null, "unavailable"]]);
    await connection.close();
  });
});
