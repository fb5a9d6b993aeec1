/**
 * A testbed of fake hypervisor hosts in network namespaces, built and torn down by the tests
 * themselves (as root; a missing tool or privilege is an error, never a skip).
 *
 * Topology (every namespace name starts with the run id, e.g. `ipt1a2b-`):
 *
 *   fabric ns: bridge br0 ───┬── daemon ns   eth0 10.77.0.2/24       (the daemon under test runs here)
 *                            ├── uplink ns   eth0 100.64.0.254/24 + 10.77.0.254/24
 *                            │               (the outside world and the hosts' default gateway;
 *                            │                learns gratuitous ARP: arp_accept=1, locktime 0)
 *                            ├── hv1 ns      eth0 10.77.0.11/24 (management + public interface: EIP /32s go here)
 *                            │               virbr0 192.168.100.1/24 ── VM namespaces (eth0 192.168.100.11, .12, ...)
 *                            └── hv2 ns      eth0 10.77.0.12/24, virbr0 ── VMs 192.168.100.21, .22, ...
 *
 * Each host runs a real OpenSSH server on its management address (port 22, user root, a throwaway
 * host key and one throwaway client key for the daemon), a libvirt test-driver node file
 * (`test:///<dir>/<host>.xml`) whose domains are the host's VMs (plus any bare domains: node-file
 * entries with nothing behind them, for scale runs), and NAT rules only once ippool
 * puts them there. Each VM runs a UDP responder on port 7007 that answers "who" with the VM's name,
 * so a probe tells which VM an EIP reaches. The testbed's EIP range is 100.64.0.0/25.
 *
 * The test process stays in the root namespace. It reaches namespaces through small agents
 * (`netns-agent.ts`) over Unix sockets, which are files and so cross namespaces; see
 * `localHostDefinitions()` and `forwardFromTestProcess()` for reaching TCP services.
 *
 * Typical use:
 *   const bed = await Testbed.create({ hosts: [{ name: "hv1", vms: [{ name: "vm11" }] }, { name: "hv2", vms: [{ name: "vm21" }] }] });
 *   try { ... bed.hostsToml() ... bed.daemonNetnsPrefix() ... await bed.probe("100.64.0.5") ... }
 *   finally { await bed.destroy(); }
 */
import { randomBytes, randomUUID } from "node:crypto";
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { HostDefinition } from "../../src/config/config.ts";
import { type HostSpec, hostsToml } from "./config-toml.ts";
import { type CommandResult, killTree, sh, shSync } from "./processes.ts";
import { SSHD, spawnSshd, sshdConfigText } from "./sshd.ts";

export type DomainState = "running" | "paused" | "shut off";

export interface TestbedVmSpec {
  /** Domain name, unique across the testbed: `[a-z][a-z0-9-]*`, at most 31 characters. */
  readonly name: string;
  /** Domain UUID; random if omitted. */
  readonly uuid?: string;
  /** In 192.168.100.0/24, unique across the testbed; default 192.168.100.<10·hostNumber + vmNumber> (hv1: .11, .12; hv2: .21, ...). */
  readonly privateIp?: string;
  /** libvirt state; default "running". */
  readonly state?: DomainState;
}

export interface TestbedHostSpec {
  /** `[a-z][a-z0-9]*`, at most 10 characters (it goes into interface and namespace names). */
  readonly name: string;
  readonly vms?: readonly TestbedVmSpec[];
  /** Domains that are only entries in the host's libvirt node file (see `BareDomainSpec`). */
  readonly bareDomains?: readonly BareDomainSpec[];
}

/**
 * A libvirt domain with no VM behind it: an entry in the host's node file only (no namespace, no
 * address, no responder), for scale runs of the libvirt checks, e.g. 1,000 instances on a host.
 * Names share the VMs' rules and uniqueness; state defaults to "running".
 */
export type BareDomainSpec = Pick<TestbedVmSpec, "name" | "uuid" | "state">;

export interface TestbedOptions {
  readonly hosts: readonly TestbedHostSpec[];
  /**
   * Opt-in fault injection: every host's sshd runs each command through a shim (`ForceCommand`)
   * that `setFault` switches at run time. Off, sshd runs commands itself as usual.
   */
  readonly faults?: boolean;
}

/**
 * How a host with `faults` on treats each SSH command (see `Testbed.setFault`):
 * - `none`: runs it.
 * - `hang`: the program hangs (sleeps, reading nothing); the `timeout -s KILL N` the daemon puts in
 *   front of every command still applies, as it would to a hung nft or virsh.
 * - `garbage`: runs nothing, prints random bytes and broken JSON on stdout, exits 0.
 * - `drop`: runs it to completion, then kills its sshd session before the exit status is sent: the
 *   connection dies while, as the client sees it, the command is still running.
 */
export type FaultMode = "none" | "hang" | "garbage" | "drop";

export interface TestbedVm {
  readonly name: string;
  readonly uuid: string;
  readonly privateIp: string;
  /** The name of the host the VM runs on. */
  readonly host: string;
  readonly namespace: string;
  /** The state in the host's libvirt node file (changed with `setDomainState`). */
  state: DomainState;
}

/** One fake hypervisor host, with everything a `[[hosts]]` section needs. */
export interface TestbedHost {
  readonly name: string;
  readonly namespace: string;
  /** Management address, where sshd listens (reachable from the daemon namespace). */
  readonly address: string;
  readonly port: number;
  readonly user: string;
  /** The daemon's client key (mode 0600), the same for every host. */
  readonly privateKeyPath: string;
  /** The pinned host key fingerprint, `SHA256:...` as `ssh-keygen -lf` prints it. */
  readonly hostKey: string;
  readonly hostKeyPath: string;
  /** `test:///<dir>/<name>.xml`: the libvirt test driver over this host's node file. */
  readonly libvirtUri: string;
  /** `eth0`: the public interface (EIP /32s go here); it is also the management interface. */
  readonly publicInterface: string;
  readonly vms: readonly TestbedVm[];
  /** Node-file-only domains (see `BareDomainSpec`; replaced with `setBareDomains`). */
  readonly bareDomains: readonly BareDomain[];
}

export interface BareDomain {
  readonly name: string;
  readonly uuid: string;
  readonly state: DomainState;
}

export interface HostTimeouts {
  readonly connectTimeoutMs?: number;
  readonly commandTimeoutMs?: number;
}

const AGENT = join(import.meta.dir, "netns-agent.ts");
const BUN = process.execPath;
const RUNSTATE: Record<DomainState, number> = { running: 1, paused: 3, "shut off": 5 };
/** Every tool the testbed and the host driver run, with the Debian package that has it. */
const TOOLS: Record<string, string> = {
  ip: "iproute2",
  nft: "nftables",
  sshd: "openssh-server",
  "ssh-keygen": "openssh-client",
  virsh: "libvirt-clients",
  conntrack: "conntrack",
  arping: "iputils-arping",
  sysctl: "procps",
  unshare: "util-linux",
  mount: "mount",
};
const DAEMON_ADDRESS = "10.77.0.2";
const GATEWAY = "10.77.0.254";
const VM_GATEWAY = "192.168.100.1";

/** Testbeds not yet destroyed; torn down synchronously if the process exits first. */
const live = new Set<Testbed>();
let exitHooked = false;

export class Testbed {
  /** The address the uplink (the outside world) sends probes from. */
  readonly uplinkAddress = "100.64.0.254";
  /** EIPs for the daemon's `[[eip_pools]]`: on-link for the uplink, held by hosts as /32s. */
  readonly eipCidr = "100.64.0.0/25";
  /** The UDP port of every VM's responder. */
  readonly echoPort = 7007;
  /** The daemon namespace's address on the fabric. */
  readonly daemonAddress = DAEMON_ADDRESS;
  readonly namespaces: { readonly fabric: string; readonly daemon: string; readonly uplink: string };
  readonly hosts: readonly TestbedHost[];

  private readonly processes = new Map<string, Subprocess>();
  private readonly servers = new Set<net.Server>();
  private readonly sockets = new Set<net.Socket>();
  private readonly forwards = new Map<string, { address: string; port: number }>();
  private forwardCount = 0;
  private destroyed = false;
  private readonly faults: boolean;

  private constructor(
    /** The run id every namespace name starts with, e.g. `ipt1a2b`. */
    readonly id: string,
    /** The temp directory with keys, configs, node files, logs and control sockets. */
    readonly dir: string,
    options: TestbedOptions,
  ) {
    this.namespaces = { fabric: `${id}-fabric`, daemon: `${id}-daemon`, uplink: `${id}-uplink` };
    this.hosts = planHosts(id, dir, options);
    this.faults = options.faults ?? false;
  }

  /** Builds the whole testbed; on any failure tears down what was built and throws. */
  static async create(options: TestbedOptions): Promise<Testbed> {
    checkPrerequisites();
    const id = await uniqueId();
    const dir = mkdtempSync(`/tmp/${id}-`);
    let bed: Testbed;
    try {
      bed = new Testbed(id, dir, options);
    } catch (error) {
      rmSync(dir, { recursive: true, force: true });
      throw error;
    }
    live.add(bed);
    hookExit();
    try {
      await bed.build();
    } catch (error) {
      await bed.destroy();
      throw error;
    }
    return bed;
  }

  /** The host named `name` (throws if there is none). */
  host(name: string): TestbedHost {
    const host = this.hosts.find((h) => h.name === name);
    if (!host) throw new Error(`testbed: no host ${name}`);
    return host;
  }

  /** The VM named `name`, on whichever host (throws if there is none). */
  vm(name: string): TestbedVm {
    const vm = this.hosts.flatMap((h) => h.vms).find((v) => v.name === name);
    if (!vm) throw new Error(`testbed: no VM ${name}`);
    return vm;
  }

  /** argv prefix that runs a command in the daemon namespace: `[...bed.daemonNetnsPrefix(), "dist/ippool", ...]`. */
  daemonNetnsPrefix(): string[] {
    return ["ip", "netns", "exec", this.namespaces.daemon];
  }

  /** The hosts as a daemon running in the daemon namespace reaches them. */
  hostDefinitions(timeouts: HostTimeouts = {}): HostDefinition[] {
    return this.hosts.map((host) => definition(host, host.address, host.port, timeouts));
  }

  /** The hosts for a daemon config (`configToml`'s `hosts`), as the daemon namespace reaches them. */
  hostSpecs(timeouts: HostTimeouts = {}): HostSpec[] {
    return this.hosts.map((host) => ({ ...reachedAt(host, host.address, host.port), ...timeouts }));
  }

  /** `[[hosts]]` TOML sections for a daemon running in the daemon namespace. */
  hostsToml(timeouts: HostTimeouts = {}): string {
    return hostsToml(this.hostSpecs(timeouts));
  }

  /**
   * The hosts as the TEST PROCESS (root namespace) reaches them: each address is 127.0.0.1 and a
   * port forwarded through the daemon namespace to the host's sshd, so the SSH traffic crosses the
   * real fabric (stopping sshd or downing the host is seen as such).
   */
  async localHostDefinitions(timeouts: HostTimeouts = {}): Promise<HostDefinition[]> {
    return Promise.all(
      this.hosts.map(async (host) => {
        const local = await this.forwardFromTestProcess(host.address, host.port);
        return definition(host, local.address, local.port, timeouts);
      }),
    );
  }

  /**
   * A TCP port on 127.0.0.1 in the test process whose connections reach `address:port` as seen from
   * the daemon namespace (e.g. a host's sshd, or the daemon's own TCP listener at 127.0.0.1:PORT
   * inside that namespace). Cached per target.
   */
  async forwardFromTestProcess(address: string, port: number): Promise<{ address: string; port: number }> {
    const key = `${address}:${port}`;
    const known = this.forwards.get(key);
    if (known) return known;
    const path = join(this.dir, `fwd-${++this.forwardCount}.sock`);
    await this.agent("daemon", "/forward", { path, host: address, port });
    const server = net.createServer((client) => {
      const upstream = net.connect(path);
      this.sockets.add(client).add(upstream);
      const close = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    this.servers.add(server);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const local = { address: "127.0.0.1", port: (server.address() as net.AddressInfo).port };
    this.forwards.set(key, local);
    return local;
  }

  /** From the uplink: sends "who" to `eip`:7007 and resolves with the name of the VM that answered, or null. */
  async probe(eip: string, options: { timeoutMs?: number } = {}): Promise<string | null> {
    const result = (await this.agent("uplink", "/request", {
      host: eip,
      port: this.echoPort,
      message: "who",
      timeoutMs: options.timeoutMs ?? 500,
    })) as { reply: string | null };
    return result.reply;
  }

  /**
   * From the uplink: probes `eip` every ~1 ms (one UDP flow) until `vmName` answers; resolves with
   * the milliseconds from this call to that answer. Throws if it does not answer within `timeoutMs`.
   */
  async probeUntil(eip: string, vmName: string, timeoutMs: number): Promise<number> {
    const start = performance.timeOrigin + performance.now();
    const result = (await this.agent("uplink", "/until", {
      host: eip,
      port: this.echoPort,
      message: "who",
      expect: vmName,
      timeoutMs,
      intervalMs: 1,
    })) as { answeredAt: number | null; attempts: number };
    if (result.answeredAt === null) {
      throw new Error(`testbed: ${vmName} did not answer on ${eip} within ${timeoutMs} ms (${result.attempts} probes)`);
    }
    return Math.max(0, result.answeredAt - start);
  }

  /**
   * The source address the uplink sees on a datagram the VM sends it (a flow the VM starts): the
   * EIP when the VM's host SNATs it, the VM's private IP when not, null if nothing arrived.
   */
  async snatSource(vmName: string, options: { timeoutMs?: number } = {}): Promise<string | null> {
    const vm = this.vm(vmName);
    const { id, port } = (await this.agent("uplink", "/listen", {})) as { id: number; port: number };
    await this.agent(`vm-${vm.name}`, "/send", { host: this.uplinkAddress, port, message: vm.name });
    const result = (await this.agent("uplink", "/received", { id, timeoutMs: options.timeoutMs ?? 1000 })) as {
      from: string | null;
    };
    return result.from;
  }

  /** Sends "who" to `address`:7007 from inside a host's namespace; the answering VM's name, or null. */
  async probeFromHost(hostName: string, address: string, options: { timeoutMs?: number } = {}): Promise<string | null> {
    const host = this.host(hostName);
    const { stdout } = await sh([
      "ip",
      "netns",
      "exec",
      host.namespace,
      BUN,
      AGENT,
      "request",
      address,
      String(this.echoPort),
      "who",
      String(options.timeoutMs ?? 1000),
    ]);
    return (JSON.parse(stdout) as { reply: string | null }).reply;
  }

  /** Rewrites the host's libvirt node file with the VM in `state` (every virsh call reads the file anew). */
  setDomainState(hostName: string, vmName: string, state: DomainState): void {
    const host = this.host(hostName);
    const vm = host.vms.find((v) => v.name === vmName);
    if (!vm) throw new Error(`testbed: no VM ${vmName} on ${hostName}`);
    vm.state = state;
    writeNodeFile(host);
  }

  /**
   * Replaces the host's bare domains and rewrites its node file. The test driver parses the whole
   * file on every virsh call (about 0.3 s with 1,000 domains), so a scale run may keep only the
   * domains about to be checked.
   */
  setBareDomains(hostName: string, domains: readonly BareDomainSpec[]): void {
    const host = this.host(hostName);
    const others = this.hosts.flatMap((h) => [...h.vms, ...(h === host ? [] : h.bareDomains)]);
    (host as { bareDomains: readonly BareDomain[] }).bareDomains = planBareDomains(
      domains,
      new Set(others.map((d) => d.name)),
    );
    writeNodeFile(host);
  }

  /** Kills the host's sshd and every session it has: open connections drop, new ones are refused. */
  async stopSshd(hostName: string): Promise<void> {
    const key = `sshd-${this.host(hostName).name}`;
    const proc = this.processes.get(key);
    if (!proc) return;
    this.processes.delete(key);
    killTree(proc.pid);
    await proc.exited;
  }

  /** Starts the host's sshd again (same host key); no-op if it runs. */
  async startSshd(hostName: string): Promise<void> {
    const host = this.host(hostName);
    if (this.processes.has(`sshd-${host.name}`)) return;
    await this.startSshdProcess(host);
  }

  /** The host disappears: sshd killed, then its eth0 down (no management, no data plane, no ARP answers). */
  async hostDown(hostName: string): Promise<void> {
    const host = this.host(hostName);
    await this.stopSshd(host.name);
    await sh(["ip", "-n", host.namespace, "link", "set", "eth0", "down"]);
  }

  /** The host comes back: eth0 up, default route restored, sshd started. Its NAT state is as it was (see flushHost). */
  async hostUp(hostName: string): Promise<void> {
    const host = this.host(hostName);
    await sh(["ip", "-n", host.namespace, "link", "set", "eth0", "up"]);
    await sh(["ip", "-n", host.namespace, "route", "replace", "default", "via", GATEWAY, "dev", "eth0"]);
    await this.startSshd(host.name);
  }

  /** Switches how the host treats SSH commands from now on (the testbed must be built with `faults: true`). */
  setFault(hostName: string, mode: FaultMode): void {
    if (!this.faults) throw new Error("testbed: setFault needs Testbed.create({ faults: true })");
    const path = faultFile(this.dir, this.host(hostName).name);
    writeFileSync(`${path}.tmp`, `${mode}\n`);
    renameSync(`${path}.tmp`, path);
  }

  /**
   * The host gets a new host key (sshd restarted, so open connections drop); the pinned
   * `hostKey` stays the old one. Resolves with the new fingerprint. `restoreHostKey` undoes it.
   */
  async rotateHostKey(hostName: string): Promise<string> {
    const host = this.host(hostName);
    const saved = `${host.hostKeyPath}.orig`;
    if (existsSync(saved)) throw new Error(`testbed: ${host.name}'s host key is already rotated`);
    for (const suffix of ["", ".pub"]) renameSync(`${host.hostKeyPath}${suffix}`, `${saved}${suffix}`);
    await sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", `${host.name}-rotated`, "-f", host.hostKeyPath]);
    await this.stopSshd(host.name);
    await this.startSshd(host.name);
    const { stdout } = await sh(["ssh-keygen", "-lf", `${host.hostKeyPath}.pub`]);
    return stdout.split(/\s+/)[1] ?? "";
  }

  /** Puts back the host key `rotateHostKey` replaced (the pinned one) and restarts sshd. */
  async restoreHostKey(hostName: string): Promise<void> {
    const host = this.host(hostName);
    const saved = `${host.hostKeyPath}.orig`;
    if (!existsSync(saved)) throw new Error(`testbed: ${host.name}'s host key was not rotated`);
    for (const suffix of ["", ".pub"]) renameSync(`${saved}${suffix}`, `${host.hostKeyPath}${suffix}`);
    await this.stopSshd(host.name);
    await this.startSshd(host.name);
  }

  /**
   * Simulates a reboot's loss of state: deletes table ip ippool, removes every 100.64.0.0/24 /32
   * from eth0 and flushes conntrack. (Combine with hostDown/hostUp for a full reboot.)
   */
  async flushHost(hostName: string): Promise<void> {
    const host = this.host(hostName);
    await this.hostExec(host.name, ["nft", "delete", "table", "ip", "ippool"]);
    const { stdout } = await sh(["ip", "-n", host.namespace, "-j", "-4", "addr", "show", "dev", "eth0"]);
    const links = JSON.parse(stdout || "[]") as { addr_info?: { local: string; prefixlen: number }[] }[];
    for (const a of links.flatMap((l) => l.addr_info ?? [])) {
      if (a.prefixlen === 32 && a.local.startsWith("100.64.0.")) {
        await sh(["ip", "-n", host.namespace, "addr", "del", `${a.local}/32`, "dev", "eth0"]);
      }
    }
    await this.hostExec(host.name, ["conntrack", "-F"]);
  }

  /** Runs argv in the host's namespace (e.g. `["nft", "list", "table", "ip", "ippool"]`); never throws on exit status. */
  hostExec(hostName: string, argv: readonly string[], options: { stdin?: string } = {}): Promise<CommandResult> {
    return sh(["ip", "netns", "exec", this.host(hostName).namespace, ...argv], { ...options, allowFail: true });
  }

  /** The EIP /32s currently on the host's eth0. */
  async hostAddresses(hostName: string): Promise<string[]> {
    const { stdout } = await sh(["ip", "-n", this.host(hostName).namespace, "-j", "-4", "addr", "show", "dev", "eth0"]);
    const links = JSON.parse(stdout || "[]") as { addr_info?: { local: string; prefixlen: number }[] }[];
    return links
      .flatMap((l) => l.addr_info ?? [])
      .filter((a) => a.prefixlen === 32)
      .map((a) => a.local);
  }

  /**
   * Tears everything down: the test process's forwarders, every process the testbed started (with
   * their children, by PID), the namespaces and the temp directory. Idempotent; never throws.
   */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    for (const socket of this.sockets) socket.destroy();
    for (const server of this.servers) server.close();
    for (const proc of this.processes.values()) killTree(proc.pid);
    await Promise.all([...this.processes.values()].map((proc) => Promise.race([proc.exited, Bun.sleep(2000)])));
    this.processes.clear();
    await Promise.all(this.allNamespaces().map((ns) => sh(["ip", "netns", "del", ns], { allowFail: true })));
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** `destroy` for exit handlers: synchronous, best effort. */
  destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    live.delete(this);
    for (const proc of this.processes.values()) killTree(proc.pid);
    for (const ns of this.allNamespaces()) shSync(["ip", "netns", "del", ns]);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private allNamespaces(): string[] {
    return [
      ...this.hosts.flatMap((h) => h.vms.map((v) => v.namespace)),
      ...this.hosts.map((h) => h.namespace),
      this.namespaces.uplink,
      this.namespaces.daemon,
      this.namespaces.fabric,
    ];
  }

  private async build(): Promise<void> {
    if (!existsSync("/run/sshd")) mkdirSync("/run/sshd", { mode: 0o755, recursive: true });
    const { fabric, daemon, uplink } = this.namespaces;
    const keyPath = join(this.dir, "id_ed25519");
    await sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", `ippool-testbed-${this.id}`, "-f", keyPath]);
    chmodSync(keyPath, 0o600);
    writeFileSync(join(this.dir, "authorized_keys"), readFileSync(`${keyPath}.pub`));
    writeFileSync(join(this.dir, "empty"), "");
    if (this.faults) writeFileSync(join(this.dir, "fault-shim.sh"), FAULT_SHIM, { mode: 0o755 });

    await Promise.all(this.allNamespaces().map((ns) => sh(["ip", "netns", "add", ns])));
    await Promise.all(this.allNamespaces().map((ns) => sh(["ip", "-n", ns, "link", "set", "lo", "up"])));
    await sh(["ip", "-n", fabric, "link", "add", "br0", "type", "bridge"]);
    await sh(["ip", "-n", fabric, "link", "set", "br0", "up"]);

    await this.attach(daemon, "v-daemon");
    await sh(["ip", "-n", daemon, "addr", "add", `${DAEMON_ADDRESS}/24`, "dev", "eth0"]);

    await this.attach(uplink, "v-uplink");
    await sh(["ip", "-n", uplink, "addr", "add", `${this.uplinkAddress}/24`, "dev", "eth0"]);
    await sh(["ip", "-n", uplink, "addr", "add", `${GATEWAY}/24`, "dev", "eth0"]);
    await sysctl(uplink, {
      "net.ipv4.conf.all.arp_accept": 1,
      "net.ipv4.conf.eth0.arp_accept": 1,
      "net.ipv4.conf.all.rp_filter": 0,
      "net.ipv4.conf.eth0.rp_filter": 0,
      "net.ipv4.neigh.eth0.locktime": 0,
    });

    await Promise.all(this.hosts.map((host) => this.buildHost(host)));
    await Promise.all([
      ...this.hosts.map((host) => this.startSshdProcess(host)),
      this.startAgent("uplink", uplink, []),
      this.startAgent("daemon", daemon, []),
      ...this.hosts.flatMap((h) =>
        h.vms.map((vm) =>
          this.startAgent(`vm-${vm.name}`, vm.namespace, ["--echo", vm.name, "--port", String(this.echoPort)]),
        ),
      ),
    ]);
  }

  private async attach(namespace: string, fabricSide: string): Promise<void> {
    await plugIntoBridge(this.namespaces.fabric, "br0", fabricSide, namespace);
  }

  private async buildHost(host: TestbedHost): Promise<void> {
    const ns = host.namespace;
    await this.attach(ns, `v-${host.name}`);
    await sh(["ip", "-n", ns, "addr", "add", `${host.address}/24`, "dev", "eth0"]);
    await sh(["ip", "-n", ns, "route", "add", "default", "via", GATEWAY, "dev", "eth0"]);
    await sysctl(ns, {
      "net.ipv4.ip_forward": 1,
      "net.ipv4.conf.all.rp_filter": 0,
      "net.ipv4.conf.default.rp_filter": 0,
      "net.ipv4.conf.eth0.rp_filter": 0,
    });
    await sh(["ip", "-n", ns, "link", "add", "virbr0", "type", "bridge"]);
    await sh(["ip", "-n", ns, "addr", "add", `${VM_GATEWAY}/24`, "dev", "virbr0"]);
    await sh(["ip", "-n", ns, "link", "set", "virbr0", "up"]);
    for (const [i, vm] of host.vms.entries()) {
      await plugIntoBridge(ns, "virbr0", `vnet${i}`, vm.namespace);
      await sh(["ip", "-n", vm.namespace, "addr", "add", `${vm.privateIp}/24`, "dev", "eth0"]);
      await sh(["ip", "-n", vm.namespace, "route", "add", "default", "via", VM_GATEWAY]);
    }
    writeNodeFile(host);
    const hostDir = join(this.dir, host.name);
    mkdirSync(hostDir, { recursive: true });
    await sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", host.hostKeyPath]);
    const { stdout } = await sh(["ssh-keygen", "-lf", `${host.hostKeyPath}.pub`]);
    const fingerprint = stdout.split(/\s+/)[1] ?? "";
    if (!/^SHA256:[A-Za-z0-9+/]{43}$/.test(fingerprint))
      throw new Error(`testbed: unexpected ssh-keygen -lf output: ${stdout}`);
    (host as { hostKey: string }).hostKey = fingerprint;
    const config = join(hostDir, "sshd_config");
    writeFileSync(
      config,
      sshdConfigText({
        port: 22,
        address: host.address,
        hostKeyPath: host.hostKeyPath,
        pidFile: join(hostDir, "sshd.pid"),
        authorizedKeys: join(this.dir, "authorized_keys"),
        // `exec`: the shim replaces the login shell, so its parent is the session's sshd (see "drop").
        extra: this.faults
          ? [`ForceCommand exec ${join(this.dir, "fault-shim.sh")} ${faultFile(this.dir, host.name)}`]
          : [],
      }),
    );
    if (this.faults) this.setFault(host.name, "none");
    await sh([SSHD, "-t", "-f", config]);
  }

  /** The host's sshd (see `spawnSshd`), registered for stopping by name. */
  private async startSshdProcess(host: TestbedHost): Promise<void> {
    const hostDir = join(this.dir, host.name);
    const proc = await spawnSshd(
      host.namespace,
      join(hostDir, "sshd_config"),
      join(hostDir, "sshd.log"),
      join(this.dir, "empty"),
    );
    this.processes.set(`sshd-${host.name}`, proc);
  }

  /** Starts netns-agent.ts in `namespace` with a control socket `<dir>/<role>.sock`; waits for "ready". */
  private async startAgent(role: string, namespace: string, args: string[]): Promise<void> {
    const control = join(this.dir, `${role}.sock`);
    const fd = openSync(join(this.dir, `${role}.log`), "w");
    const proc = Bun.spawn(["ip", "netns", "exec", namespace, BUN, AGENT, "serve", "--control", control, ...args], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: fd,
    });
    closeSync(fd);
    this.processes.set(role, proc);
    const reader = proc.stdout.getReader();
    let output = "";
    const deadline = setTimeout(() => killTree(proc.pid), 15_000);
    try {
      while (!output.includes("ready")) {
        const { done, value } = await reader.read();
        if (done) {
          const log = readFileSync(join(this.dir, `${role}.log`), "utf8");
          throw new Error(`testbed: agent ${role} in ${namespace} exited before it was ready: ${output}${log}`);
        }
        output += new TextDecoder().decode(value);
      }
    } finally {
      clearTimeout(deadline);
      reader.releaseLock();
    }
  }

  private async agent(role: string, path: string, body: unknown): Promise<unknown> {
    if (this.destroyed) throw new Error("testbed: already destroyed");
    const response = await fetch(`http://agent${path}`, {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "content-type": "application/json" },
      unix: join(this.dir, `${role}.sock`),
    } as RequestInit);
    const result = (await response.json()) as { error?: string };
    if (!response.ok) throw new Error(`testbed: agent ${role} ${path}: ${result.error ?? response.status}`);
    return result;
  }
}

/** A host's fault mode file, read by the shim for every command. */
function faultFile(dir: string, hostName: string): string {
  return join(dir, hostName, "fault");
}

/**
 * sshd's ForceCommand when faults are on (`$1`: the host's fault file; see `FaultMode`). The
 * daemon's command arrives in SSH_ORIGINAL_COMMAND, every argument single-quoted, so `eval set --`
 * gives its argv back. `$PPID` is the session's sshd (ForceCommand execs the shim); killing it
 * with SIGKILL closes the connection's socket at once.
 */
const FAULT_SHIM = `#!/bin/sh
mode=$(cat "$1" 2>/dev/null)
case "$mode" in
hang)
  eval "set -- $SSH_ORIGINAL_COMMAND"
  if [ "$1" = timeout ]; then exec "$1" "$2" "$3" "$4" sleep 86400 </dev/null; fi
  exec sleep 86400 </dev/null ;;
garbage)
  head -c 200 /dev/urandom
  printf '\\n{"nftables": [{"table": {"family": "ip", "name": \\n'
  exit 0 ;;
drop)
  sh -c "$SSH_ORIGINAL_COMMAND" >/dev/null 2>&1
  kill -KILL "$PPID"
  exit 0 ;;
*)
  exec sh -c "$SSH_ORIGINAL_COMMAND" ;;
esac
`;

/** A veth pair from `bridge` in namespace `ns` (this side `name`) to `eth0` in namespace `peer`, both sides up. */
async function plugIntoBridge(ns: string, bridge: string, name: string, peer: string): Promise<void> {
  await sh(["ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", peer]);
  await sh(["ip", "-n", ns, "link", "set", name, "master", bridge, "up"]);
  await sh(["ip", "-n", peer, "link", "set", "eth0", "up"]);
}

/** What a daemon needs to reach the host at `address`:`port`, short of the settings with defaults. */
function reachedAt(
  host: TestbedHost,
  address: string,
  port: number,
): Omit<HostDefinition, "sudo" | "connectTimeoutMs" | "commandTimeoutMs"> {
  return {
    name: host.name,
    address,
    port,
    user: host.user,
    privateKeyPath: host.privateKeyPath,
    hostKey: host.hostKey,
    libvirtUri: host.libvirtUri,
    publicInterface: host.publicInterface,
  };
}

function definition(host: TestbedHost, address: string, port: number, timeouts: HostTimeouts): HostDefinition {
  return {
    ...reachedAt(host, address, port),
    sudo: false,
    connectTimeoutMs: timeouts.connectTimeoutMs ?? 3000,
    commandTimeoutMs: timeouts.commandTimeoutMs ?? 5000,
  };
}

/** Validates the spec and lays out names and addresses (nothing is created yet). */
function planHosts(id: string, dir: string, options: TestbedOptions): TestbedHost[] {
  if (options.hosts.length === 0 || options.hosts.length > 24) throw new Error("testbed: between 1 and 24 hosts");
  const vmNames = new Set<string>();
  const privateIps = new Set<string>();
  return options.hosts.map((spec, i) => {
    if (!/^[a-z][a-z0-9]{0,9}$/.test(spec.name)) throw new Error(`testbed: bad host name ${JSON.stringify(spec.name)}`);
    if (options.hosts.findIndex((h) => h.name === spec.name) !== i) throw new Error(`testbed: host ${spec.name} twice`);
    const vms = (spec.vms ?? []).map((v, j): TestbedVm => {
      if (!/^[a-z][a-z0-9-]{0,30}$/.test(v.name)) throw new Error(`testbed: bad VM name ${JSON.stringify(v.name)}`);
      if (vmNames.has(v.name)) throw new Error(`testbed: VM ${v.name} twice`);
      vmNames.add(v.name);
      if (!v.privateIp && j >= 9) throw new Error(`testbed: give VMs after the 9th on ${spec.name} a privateIp`);
      const privateIp = v.privateIp ?? `192.168.100.${10 * (i + 1) + j + 1}`;
      const last = Number(privateIp.split(".")[3]);
      if (!/^192\.168\.100\.\d{1,3}$/.test(privateIp) || last < 2 || last > 254) {
        throw new Error(`testbed: VM ${v.name}: privateIp must be in 192.168.100.2-254 (got ${privateIp})`);
      }
      if (privateIps.has(privateIp)) throw new Error(`testbed: private IP ${privateIp} twice`);
      privateIps.add(privateIp);
      return {
        name: v.name,
        uuid: v.uuid ?? randomUUID(),
        privateIp,
        host: spec.name,
        namespace: `${id}-vm-${v.name}`,
        state: v.state ?? "running",
      };
    });
    const bareDomains = planBareDomains(spec.bareDomains ?? [], vmNames);
    return {
      name: spec.name,
      namespace: `${id}-${spec.name}`,
      address: `10.77.0.${11 + i}`,
      port: 22,
      user: "root",
      privateKeyPath: join(dir, "id_ed25519"),
      hostKey: "",
      hostKeyPath: join(dir, spec.name, "ssh_host_ed25519_key"),
      libvirtUri: `test://${join(dir, `${spec.name}.xml`)}`,
      publicInterface: "eth0",
      vms,
      bareDomains,
    };
  });
}

/** Checks bare domain specs against the names taken so far (and adds theirs); fills in UUID and state. */
function planBareDomains(specs: readonly BareDomainSpec[], taken: Set<string>): BareDomain[] {
  return specs.map((d) => {
    if (!/^[a-z][a-z0-9-]{0,30}$/.test(d.name)) throw new Error(`testbed: bad domain name ${JSON.stringify(d.name)}`);
    if (taken.has(d.name)) throw new Error(`testbed: VM ${d.name} twice`);
    taken.add(d.name);
    return { name: d.name, uuid: d.uuid ?? randomUUID(), state: d.state ?? "running" };
  });
}

/** The libvirt test driver's node file: one domain per VM and bare domain, its state in <test:runstate>. Written atomically. */
function writeNodeFile(host: TestbedHost): void {
  const path = host.libvirtUri.slice("test://".length);
  const domains = [...host.vms, ...host.bareDomains].map((vm) =>
    [
      "  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>",
      `    <name>${vm.name}</name>`,
      `    <uuid>${vm.uuid}</uuid>`,
      "    <memory>65536</memory>",
      "    <os><type>hvm</type></os>",
      `    <test:runstate>${RUNSTATE[vm.state]}</test:runstate>`,
      "  </domain>",
    ].join("\n"),
  );
  writeFileSync(`${path}.tmp`, `<node>\n${domains.join("\n")}\n</node>\n`);
  renameSync(`${path}.tmp`, path);
}

async function sysctl(namespace: string, values: Record<string, number>): Promise<void> {
  await sh([
    "ip",
    "netns",
    "exec",
    namespace,
    "sysctl",
    "-q",
    "-w",
    ...Object.entries(values).map(([key, value]) => `${key}=${value}`),
  ]);
}

function checkPrerequisites(): void {
  if (process.getuid?.() !== 0) {
    throw new Error("testbed: must run as root (network namespaces, sshd, nftables); run the host suites as root");
  }
  const path = (process.env.PATH ?? "").split(":").concat(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]);
  const missing = Object.entries(TOOLS).filter(([tool]) => !path.some((dir) => existsSync(join(dir, tool))));
  if (missing.length > 0) {
    const packages = [...new Set(missing.map(([, pkg]) => pkg))].join(" ");
    throw new Error(
      `testbed: missing ${missing.map(([tool]) => tool).join(", ")}; install with: apt-get install --no-install-recommends ${packages} (make test does)`,
    );
  }
}

async function uniqueId(): Promise<string> {
  const { stdout } = await sh(["ip", "netns", "list"]);
  for (;;) {
    const id = `ipt${randomBytes(2).toString("hex")}`;
    if (!stdout.includes(`${id}-`) && !existsSync(`/var/run/netns/${id}-fabric`)) return id;
  }
}

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on("exit", () => {
    for (const bed of [...live]) bed.destroySync();
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      for (const bed of [...live]) bed.destroySync();
      process.exit(130);
    });
  }
}
