/**
 * A REAL libvirtd with REAL QEMU (TCG) guests, for tests that need the genuine article: libvirt
 * networks with libvirt's own dnsmasq, qemu hooks, domains that boot and take a DHCP lease.
 *
 * Everything that touches the network lives in one network namespace the fixture creates
 * (`ippool-lv-<pid of the test process>`): virtlogd, libvirtd, the bridges and taps libvirt makes,
 * libvirt's dnsmasq, the QEMU processes and any operator-style dnsmasq. The machine's own
 * interfaces are never touched. Test subnets must be 10.x.y.0/24.
 *
 * libvirtd is a machine-wide singleton (/run/libvirtd.pid, /run/libvirt/…): one RealLibvirt at a
 * time per machine. A leftover of a crashed run (its namespace names a dead PID) is cleaned up at
 * start; a libvirtd started by anything else is an error.
 *
 * Typical use:
 *   const lv = await RealLibvirt.start();
 *   try {
 *     await lv.defineNetwork({ name: "ipt-net", bridge: "iptbr0", subnet: "10.123.0.0/24",
 *                              dnsmasqOptions: [`dhcp-hostsdir=${dir}`] });
 *     await lv.defineDomain({ name: "g1", mac: "52:54:00:12:34:56", nic: { network: "ipt-net" } });
 *     await lv.startDomain("g1");
 *     const ip = await lv.waitForGuestAddress("g1");
 *     expect(await lv.probeEcho(ip, "hello")).toBe("hello");
 *   } finally { lv.stop(); }
 *
 * stop() is synchronous, idempotent, and also runs from a process "exit" handler.
 */
import { randomUUID } from "node:crypto";
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { formatIpv4, parseCidr } from "../../src/net/ipv4.ts";
import { type GuestImage, guestImage } from "./guest-image.ts";
import { type CommandResult, killTree, sh, shSync, waitFor } from "./processes.ts";

export const LIBVIRT_PACKAGES = [
  "libvirt-daemon-system",
  "libvirt-daemon-driver-qemu",
  "qemu-system-x86",
  "qemu-utils",
  "dnsmasq-base",
  "dnsmasq-utils",
  "busybox-static",
  "cpio",
  "iproute2",
] as const;

const URI = "qemu:///system";
const REPO = join(import.meta.dir, "..", "..");
const STATE_DIR = "/run/ippool-test-libvirt";
const NS_PREFIX = "ippool-lv-";
const HOOK = "/etc/libvirt/hooks/qemu";

export interface DhcpHost {
  readonly mac: string;
  readonly ip: string;
  readonly name?: string;
}

export interface LibvirtNetworkSpec {
  readonly name: string;
  /** At most 15 characters. */
  readonly bridge: string;
  /** `10.x.y.0/24`-style; the bridge gets the first host address (…1) unless `address` says otherwise. */
  readonly subnet: string;
  readonly address?: string;
  /** A dynamic pool. Without it DHCP is static-only: only reserved MACs get an address. */
  readonly dhcpRange?: { readonly start: string; readonly end: string };
  /** `<host>` entries in libvirt's own XML (libvirt's hostsfile). */
  readonly hosts?: readonly DhcpHost[];
  /** Raw dnsmasq options through libvirt's dnsmasq XML namespace, e.g. `dhcp-hostsdir=/dir`. */
  readonly dnsmasqOptions?: readonly string[];
  /** `<forward mode='route'/>`: traffic routed to and from the subnet is let through (isolated otherwise). */
  readonly forward?: "route";
}

export interface OperatorDnsmasqSpec {
  /** A bridge made by `createBridge` (it must carry an address in `subnet`). */
  readonly bridge: string;
  readonly subnet: string;
  /** `--dhcp-hostsdir`; a fresh empty directory (mode 0755) if omitted. */
  readonly hostsDir?: string;
  readonly leaseTime?: string;
  /** `--pid-file`; in the fixture's directory if omitted. */
  readonly pidFile?: string;
}

export interface OperatorDnsmasq {
  readonly pid: number;
  readonly bridge: string;
  readonly hostsDir: string;
  readonly leaseFile: string;
  readonly pidFile: string;
  /** Writes `mac,ip,name` as one file in the hosts directory (dot-file then rename). */
  reserve(host: DhcpHost): string;
  hup(): void;
}

export type DomainNic = { readonly network: string } | { readonly bridge: string };

export interface DomainSpec {
  /** `[a-z][a-z0-9-]*`. */
  readonly name: string;
  readonly uuid?: string;
  readonly mac: string;
  readonly nic: DomainNic;
  /** Default 128 (64 is too little for this guest). */
  readonly memoryMiB?: number;
  /** Extra kernel command line after `console=ttyS0 quiet panic=-1`. */
  readonly cmdline?: string;
}

export interface GuestEvent {
  readonly kind: string;
  readonly ip?: string;
  readonly mac?: string;
  readonly line: string;
}

interface State {
  readonly ns: string;
  readonly dir: string;
  kvm?: { mode: number; gid: number };
  domains: string[];
  networks: { name: string; bridge: string }[];
  hookBackup?: string | null;
}

export class RealLibvirt {
  readonly uri = URI;
  readonly image: GuestImage;
  private readonly state: State;
  private readonly operators: { proc: Subprocess; pidFile: string }[] = [];
  private readonly serialLogs = new Map<string, string>();
  private readonly exitHandler = () => this.stop();
  private stopped = false;

  private constructor(ns: string, dir: string, image: GuestImage) {
    this.image = image;
    this.state = { ns, dir, domains: [], networks: [] };
  }

  /** The network namespace everything lives in. */
  get netns(): string {
    return this.state.ns;
  }

  /** A private temporary directory (mode 0755, removed by stop()). */
  get dir(): string {
    return this.state.dir;
  }

  /** Installs the packages, builds the guest, fixes /dev/kvm, starts virtlogd + libvirtd in a fresh namespace. */
  static async start(): Promise<RealLibvirt> {
    await sh(["bash", join(REPO, "hooks", "install-packages"), ...LIBVIRT_PACKAGES]);
    const image = await guestImage();
    reapStale();
    const livePid = readPid("/run/libvirtd.pid");
    if (livePid !== undefined && running(livePid)) {
      const mine = inNamespace(livePid, `${NS_PREFIX}${process.pid}`);
      throw new Error(
        mine
          ? `libvirtd (pid ${livePid}) of another RealLibvirt in this process is running: stop() it first`
          : `a libvirtd (pid ${livePid}) not started by this fixture is running; stop it first`,
      );
    }
    const ns = `${NS_PREFIX}${process.pid}`;
    mkdirSync(STATE_DIR, { recursive: true, mode: 0o700 });
    const dir = mkdtempSync("/tmp/ippool-lv-");
    chmodSync(dir, 0o755); // QEMU (libvirt-qemu) writes the serial logs here
    const lv = new RealLibvirt(ns, dir, image);
    process.on("exit", lv.exitHandler);
    try {
      lv.saveState();
      await sh(["ip", "netns", "add", ns]);
      await sh(lv.inNetns(["ip", "link", "set", "lo", "up"]));
      lv.fixKvm();
      lv.saveState();
      await lv.startDaemons();
      return lv;
    } catch (error) {
      lv.stop();
      throw error;
    }
  }

  /** argv run inside the namespace. */
  inNetns(argv: readonly string[]): string[] {
    return ["ip", "netns", "exec", this.state.ns, ...argv];
  }

  /** `virsh -q -c qemu:///system ARGS` (throws on a non-zero exit unless allowFail). */
  virsh(args: readonly string[], options: { allowFail?: boolean; stdin?: string } = {}): Promise<CommandResult> {
    return sh(["virsh", "-q", "-c", URI, ...args], options);
  }

  /** Stops libvirtd (by PID) and starts it again; running domains and networks stay up. Needed after installing a hook. */
  async restart(): Promise<void> {
    const pid = readPid("/run/libvirtd.pid");
    if (pid !== undefined) await terminate(pid, 10_000);
    await this.startLibvirtd();
  }

  /**
   * Writes /etc/libvirt/hooks/qemu (mode 0755); a hook that was there before is restored by stop().
   * libvirtd only notices hooks when it starts: call restart() afterwards.
   */
  installQemuHook(script: string): void {
    if (this.state.hookBackup === undefined) {
      this.state.hookBackup = existsSync(HOOK) ? readFileSync(HOOK, "utf8") : null;
      this.saveState();
    }
    mkdirSync("/etc/libvirt/hooks", { recursive: true });
    writeFileSync(HOOK, script, { mode: 0o755 });
    chmodSync(HOOK, 0o755);
  }

  // ---- libvirt networks ----

  /** Defines (persistent) and starts a libvirt network. */
  async defineNetwork(spec: LibvirtNetworkSpec): Promise<void> {
    if (spec.bridge.length > 15) throw new Error(`bridge name ${spec.bridge} is longer than 15 characters`);
    const subnet = parseSubnet(spec.subnet);
    const address = spec.address ?? subnet.host(1);
    const options = [...(spec.dnsmasqOptions ?? [])];
    const hosts = spec.hosts ?? [];
    // libvirt enables DHCP in dnsmasq only with a <range> or a <host>: static-only DHCP is added by hand.
    if (!spec.dhcpRange && hosts.length === 0)
      options.unshift(`dhcp-range=${subnet.network},static,${subnet.netmask}`, "dhcp-authoritative");
    const dhcp =
      spec.dhcpRange || hosts.length > 0
        ? `<dhcp>${spec.dhcpRange ? `<range start='${attr(spec.dhcpRange.start)}' end='${attr(spec.dhcpRange.end)}'/>` : ""}${hosts
            .map((h) => `<host mac='${attr(h.mac)}' ip='${attr(h.ip)}'${h.name ? ` name='${attr(h.name)}'` : ""}/>`)
            .join("")}</dhcp>`
        : "";
    const xml = `<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>
  <name>${text(spec.name)}</name>
  <uuid>${randomUUID()}</uuid>
  ${spec.forward ? `<forward mode='${attr(spec.forward)}'/>` : ""}
  <bridge name='${attr(spec.bridge)}' stp='off' delay='0'/>
  <ip address='${attr(address)}' netmask='${subnet.netmask}'>${dhcp}</ip>
  ${options.length > 0 ? `<dnsmasq:options>${options.map((o) => `<dnsmasq:option value='${attr(o)}'/>`).join("")}</dnsmasq:options>` : ""}
</network>
`;
    const file = join(this.dir, `net-${spec.name}.xml`);
    writeFileSync(file, xml);
    this.state.networks.push({ name: spec.name, bridge: spec.bridge });
    this.saveState();
    await this.virsh(["net-define", file]);
    await this.virsh(["net-start", spec.name]);
  }

  /** net-destroy (if active) + net-undefine, and forgets the network's leases. */
  async destroyNetwork(name: string): Promise<void> {
    await this.virsh(["net-destroy", name], { allowFail: true });
    await this.virsh(["net-undefine", name], { allowFail: true });
    const entry = this.state.networks.find((n) => n.name === name);
    if (entry) rmSync(`/var/lib/libvirt/dnsmasq/${entry.bridge}.status`, { force: true });
    this.state.networks = this.state.networks.filter((n) => n.name !== name);
    this.saveState();
  }

  /** The PID of libvirt's dnsmasq for a running network. */
  networkDnsmasqPid(name: string): number {
    const pid = readPid(`/run/libvirt/network/${name}.pid`);
    if (pid === undefined) throw new Error(`no dnsmasq pid file for network ${name}`);
    return pid;
  }

  /** SIGHUP to libvirt's dnsmasq of a network (re-reads hosts files and the hostsdir). */
  hupNetworkDnsmasq(name: string): void {
    process.kill(this.networkDnsmasqPid(name), "SIGHUP");
  }

  // ---- plain bridges and an operator's dnsmasq ----

  /** A Linux bridge in the namespace carrying `address/prefix` (default: the subnet's …1), up. */
  async createBridge(name: string, subnet: string, address?: string): Promise<void> {
    const s = parseSubnet(subnet);
    await sh(this.inNetns(["ip", "link", "add", name, "type", "bridge"]));
    await sh(this.inNetns(["ip", "addr", "add", `${address ?? s.host(1)}/${s.prefix}`, "dev", name]));
    await sh(this.inNetns(["ip", "link", "set", name, "up"]));
  }

  /** `dnsmasq --dhcp-range=NET,static,MASK,LEASE --dhcp-hostsdir=DIR` on a bridge in the namespace. */
  async startBridgeDnsmasq(spec: OperatorDnsmasqSpec): Promise<OperatorDnsmasq> {
    const s = parseSubnet(spec.subnet);
    const base = join(this.dir, `dnsmasq-${spec.bridge}`);
    mkdirSync(base, { recursive: true, mode: 0o755 });
    const hostsDir = spec.hostsDir ?? join(base, "hosts.d");
    mkdirSync(hostsDir, { recursive: true, mode: 0o755 });
    const leaseFile = join(base, "leases");
    const pidFile = spec.pidFile ?? join(base, "pid");
    const logFile = join(base, "log");
    const logFd = openSync(logFile, "a");
    const proc = Bun.spawn(
      this.inNetns([
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",
        "--bind-interfaces",
        `--interface=${spec.bridge}`,
        `--dhcp-range=${s.network},static,${s.netmask},${spec.leaseTime ?? "1h"}`,
        `--dhcp-hostsdir=${hostsDir}`,
        `--dhcp-leasefile=${leaseFile}`,
        `--pid-file=${pidFile}`,
        "--log-facility=-",
        "--log-dhcp",
      ]),
      { stdin: "ignore", stdout: logFd, stderr: logFd },
    );
    closeSync(logFd);
    this.operators.push({ proc, pidFile });
    await waitFor(
      () => readPid(pidFile) !== undefined || proc.exitCode !== null,
      10_000,
      () => `dnsmasq on ${spec.bridge} wrote no pid file`,
    );
    if (proc.exitCode !== null) throw new Error(`dnsmasq on ${spec.bridge} exited: ${readText(logFile)}`);
    const pid = proc.pid;
    return {
      pid,
      bridge: spec.bridge,
      hostsDir,
      leaseFile,
      pidFile,
      reserve: (host) => writeHostsdirEntry(hostsDir, host),
      hup: () => process.kill(pid, "SIGHUP"),
    };
  }

  // ---- domains ----

  /** The domain XML the fixture uses (direct kernel boot of the test guest, serial console to a file). */
  domainXml(spec: DomainSpec): string {
    const serial = this.serialLog(spec.name);
    const nic =
      "network" in spec.nic
        ? `<interface type='network'><mac address='${attr(spec.mac)}'/><source network='${attr(spec.nic.network)}'/><model type='virtio'/></interface>`
        : `<interface type='bridge'><mac address='${attr(spec.mac)}'/><source bridge='${attr(spec.nic.bridge)}'/><model type='virtio'/></interface>`;
    return `<domain type='qemu'>
  <name>${text(spec.name)}</name>
  <uuid>${attr(spec.uuid ?? randomUUID())}</uuid>
  <memory unit='MiB'>${spec.memoryMiB ?? 128}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${text(this.image.kernel)}</kernel>
    <initrd>${text(this.image.initrd)}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1${spec.cmdline ? ` ${text(spec.cmdline)}` : ""}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    ${nic}
    <serial type='file'><source path='${attr(serial)}' append='off'/><target port='0'/></serial>
    <console type='file'><source path='${attr(serial)}' append='off'/><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
`;
  }

  /** `virsh define` (persistent, not started). */
  async defineDomain(spec: DomainSpec): Promise<void> {
    const file = this.writeDomainXml(spec);
    await this.virsh(["define", file]);
  }

  /** `virsh create` (transient, started at once). */
  async createDomain(spec: DomainSpec): Promise<void> {
    const file = this.writeDomainXml(spec);
    await this.virsh(["create", file]);
  }

  async startDomain(name: string): Promise<void> {
    await this.virsh(["start", name]);
  }

  async destroyDomain(name: string): Promise<void> {
    await this.virsh(["destroy", name]);
  }

  /** ACPI power button; the guest powers off (give it a few seconds). */
  async shutdownDomain(name: string): Promise<void> {
    await this.virsh(["shutdown", name]);
  }

  /** `virsh save NAME FILE` (default FILE in the fixture's directory); returns FILE. */
  async saveDomain(name: string, file = join(this.dir, `${name}.save`)): Promise<string> {
    await this.virsh(["save", name, file]);
    return file;
  }

  async restoreDomain(file: string): Promise<void> {
    await this.virsh(["restore", file]);
  }

  async managedSaveDomain(name: string): Promise<void> {
    await this.virsh(["managedsave", name]);
  }

  /** `virsh undefine --managed-save` (the domain may be running: it becomes transient). */
  async undefineDomain(name: string): Promise<void> {
    await this.virsh(["undefine", "--managed-save", name]);
  }

  /** "running", "shut off", "paused", … or null when libvirt does not know the domain. */
  async domainState(name: string): Promise<string | null> {
    const r = await this.virsh(["domstate", name], { allowFail: true });
    return r.code === 0 ? r.stdout.trim() : null;
  }

  /** Path of the domain's serial console file (emptied by QEMU at each start/restore). */
  serialLog(name: string): string {
    let path = this.serialLogs.get(name);
    if (!path) {
      path = join(this.dir, `${name}.serial.log`);
      this.serialLogs.set(name, path);
    }
    return path;
  }

  /** The `IPPOOL-GUEST …` lines of the serial log so far. */
  guestEvents(name: string): GuestEvent[] {
    const events: GuestEvent[] = [];
    for (const raw of readText(this.serialLog(name)).split(/\r?\n/)) {
      const at = raw.indexOf("IPPOOL-GUEST ");
      if (at < 0) continue;
      const line = raw.slice(at).trim();
      const kind = line.split(" ")[1] ?? "";
      const ip = /\bip=(\S+)/.exec(line)?.[1];
      const mac = /\bmac=(\S+)/.exec(line)?.[1];
      events.push({ kind, line, ...(ip ? { ip } : {}), ...(mac ? { mac } : {}) });
    }
    return events;
  }

  /** Resolves with the address of the latest `IPPOOL-GUEST bound` line; rejects with the log's tail on timeout. */
  async waitForGuestAddress(name: string, timeoutMs = 30_000): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const bound = this.guestEvents(name).filter((e) => e.kind === "bound" && e.ip);
      const last = bound[bound.length - 1];
      if (last?.ip) return last.ip;
      if (performance.now() > deadline) {
        const tail = readText(this.serialLog(name)).split("\n").slice(-25).join("\n");
        throw new Error(`guest ${name} reported no DHCP address within ${timeoutMs} ms; serial log tail:\n${tail}`);
      }
      await Bun.sleep(100);
    }
  }

  /** Sends one line to the guest's TCP echo responder (port 7) from inside the namespace; returns the answer. */
  async probeEcho(ip: string, message = "ping", timeoutSeconds = 3): Promise<string> {
    const r = await sh(
      this.inNetns([
        "timeout",
        String(timeoutSeconds),
        "bash",
        "-c",
        'exec 3<>"/dev/tcp/$1/7" && printf "%s\\n" "$2" >&3 && IFS= read -r line <&3 && printf "%s" "$line"',
        "probe",
        ip,
        message,
      ]),
      { allowFail: true },
    );
    return r.code === 0 ? r.stdout : "";
  }

  /** Destroys and undefines everything it made, kills its processes by PID, restores /dev/kvm. Idempotent. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    process.off("exit", this.exitHandler);
    const libvirtd = readPid("/run/libvirtd.pid");
    const libvirtdUp = libvirtd !== undefined && running(libvirtd) && inNamespace(libvirtd, this.state.ns);
    if (libvirtdUp) {
      for (const name of this.state.domains) {
        shSync(["virsh", "-q", "-c", URI, "destroy", name]);
        shSync(["virsh", "-q", "-c", URI, "undefine", "--managed-save", name]);
      }
      for (const { name } of this.state.networks) {
        shSync(["virsh", "-q", "-c", URI, "net-destroy", name]);
        shSync(["virsh", "-q", "-c", URI, "net-undefine", name]);
      }
    }
    for (const { proc, pidFile } of this.operators) {
      killTree(proc.pid);
      rmSync(pidFile, { force: true });
    }
    teardown(this.state);
  }

  // ---- internals ----

  private writeDomainXml(spec: DomainSpec): string {
    if (!/^[a-z][a-z0-9-]*$/.test(spec.name)) throw new Error(`bad domain name ${spec.name}`);
    const file = join(this.dir, `dom-${spec.name}.xml`);
    writeFileSync(file, this.domainXml(spec));
    if (!this.state.domains.includes(spec.name)) {
      this.state.domains.push(spec.name);
      this.saveState();
    }
    return file;
  }

  private fixKvm(): void {
    if (!existsSync("/dev/kvm")) return;
    const st = statSync("/dev/kvm");
    this.state.kvm = { mode: st.mode & 0o7777, gid: st.gid };
    const kvmGid = groupId("kvm");
    if (kvmGid !== undefined) chownSync("/dev/kvm", st.uid, kvmGid);
    chmodSync("/dev/kvm", 0o660);
  }

  private async startDaemons(): Promise<void> {
    await sh(this.inNetns(["virtlogd", "-d"]));
    await waitFor(
      () => {
        const pid = readPid("/run/virtlogd.pid");
        return pid !== undefined && running(pid);
      },
      10_000,
      () => "virtlogd wrote no pid file",
    );
    await this.startLibvirtd();
  }

  private async startLibvirtd(): Promise<void> {
    await sh(this.inNetns(["libvirtd", "-d"]));
    // The first connection after installing QEMU probes its capabilities (~10 s); later ones are cached.
    await waitFor(
      async () => {
        const pid = readPid("/run/libvirtd.pid");
        if (pid === undefined || !running(pid)) return false;
        return (await sh(["virsh", "-c", URI, "version"], { allowFail: true })).code === 0;
      },
      60_000,
      () => "libvirtd did not answer `virsh version` within 60 s",
      100,
    );
  }

  private saveState(): void {
    writeFileSync(join(STATE_DIR, `${this.state.ns}.json`), JSON.stringify(this.state));
  }
}

/** Writes `mac,ip[,name]` as `<dir>/<mac without colons>` atomically (a dot-file renamed into place). */
export function writeHostsdirEntry(dir: string, host: DhcpHost): string {
  const file = join(dir, host.mac.toLowerCase().replaceAll(":", ""));
  const tmp = join(dir, `.${host.mac.toLowerCase().replaceAll(":", "")}.tmp`);
  writeFileSync(tmp, `${host.mac.toLowerCase()},${host.ip}${host.name ? `,${host.name}` : ""}\n`, { mode: 0o644 });
  renameSync(tmp, file);
  return file;
}

// ---- teardown, also of a crashed run's leftovers ----

function teardown(state: State): void {
  const nsIno = namespaceInode(state.ns);
  const inOurNs = (pid: number) => nsIno !== undefined && netnsInode(pid) === nsIno;
  // libvirt's dnsmasq processes of our networks (normally gone after net-destroy).
  for (const { name } of state.networks) {
    const pid = readPid(`/run/libvirt/network/${name}.pid`);
    if (pid !== undefined && running(pid) && inOurNs(pid)) kill(pid);
  }
  for (const file of ["/run/libvirtd.pid", "/run/virtlogd.pid"]) {
    const pid = readPid(file);
    if (pid !== undefined && running(pid) && inOurNs(pid)) terminateSync(pid, 10_000);
  }
  // Whatever else still lives in the namespace (QEMU of a crashed run, stray dnsmasq): by PID.
  for (const pid of namespacePids(state.ns)) kill(pid);
  // Definitions libvirtd could not remove because it was not running (crashed run).
  for (const name of state.domains) {
    rmSync(`/etc/libvirt/qemu/${name}.xml`, { force: true });
    rmSync(`/etc/libvirt/qemu/autostart/${name}.xml`, { force: true });
    rmSync(`/var/lib/libvirt/qemu/save/${name}.save`, { force: true });
    rmSync(`/run/libvirt/qemu/${name}.xml`, { force: true });
    rmSync(`/run/libvirt/qemu/${name}.pid`, { force: true });
    for (const parent of ["/var/lib/libvirt/qemu", "/var/lib/libvirt/qemu/channel/target", "/run/libvirt/qemu"]) {
      try {
        for (const entry of readdirSync(parent)) {
          if (entry.startsWith("domain-") && entry.endsWith(`-${name}`) && /^domain-\d+-/.test(entry)) {
            rmSync(join(parent, entry), { recursive: true, force: true });
          }
        }
      } catch {
        // No such directory.
      }
    }
  }
  for (const { name, bridge } of state.networks) {
    rmSync(`/etc/libvirt/qemu/networks/${name}.xml`, { force: true });
    rmSync(`/etc/libvirt/qemu/networks/autostart/${name}.xml`, { force: true });
    rmSync(`/run/libvirt/network/${name}.xml`, { force: true });
    rmSync(`/run/libvirt/network/${name}.pid`, { force: true });
    for (const suffix of [".conf", ".hostsfile", ".addnhosts"])
      rmSync(`/var/lib/libvirt/dnsmasq/${name}${suffix}`, { force: true });
    rmSync(`/run/libvirt/network/${name}`, { recursive: true, force: true });
    rmSync(`/var/lib/libvirt/dnsmasq/${bridge}.status`, { force: true });
    rmSync(`/var/lib/libvirt/dnsmasq/${bridge}.macs`, { force: true });
  }
  if (state.hookBackup !== undefined) {
    if (state.hookBackup === null) rmSync(HOOK, { force: true });
    else writeFileSync(HOOK, state.hookBackup, { mode: 0o755 });
  }
  if (existsSync(`/run/netns/${state.ns}`)) shSync(["ip", "netns", "del", state.ns]);
  if (state.kvm && existsSync("/dev/kvm")) {
    try {
      chownSync("/dev/kvm", statSync("/dev/kvm").uid, state.kvm.gid);
      chmodSync("/dev/kvm", state.kvm.mode);
    } catch {
      // Leave it; nothing better to do in a teardown.
    }
  }
  rmSync(state.dir, { recursive: true, force: true });
  rmSync(join(STATE_DIR, `${state.ns}.json`), { force: true });
}

/** Tears down what a crashed run of this fixture left: namespaces `ippool-lv-<pid>` whose pid is dead. */
function reapStale(): void {
  const names = new Set<string>();
  try {
    for (const f of readdirSync(STATE_DIR))
      if (f.startsWith(NS_PREFIX) && f.endsWith(".json")) names.add(f.slice(0, -5));
  } catch {
    // No state directory yet.
  }
  try {
    for (const f of readdirSync("/run/netns")) if (f.startsWith(NS_PREFIX)) names.add(f);
  } catch {
    // No namespaces.
  }
  for (const ns of names) {
    const owner = Number(ns.slice(NS_PREFIX.length));
    if (Number.isInteger(owner) && owner !== process.pid && running(owner)) continue; // a zombie owner counts as dead
    let state: State = { ns, dir: "/nonexistent-ippool-lv", domains: [], networks: [] };
    try {
      state = JSON.parse(readFileSync(join(STATE_DIR, `${ns}.json`), "utf8")) as State;
    } catch {
      // A namespace without a state file: kill what is in it and delete it.
    }
    teardown(state);
  }
}

// ---- small helpers ----

function readPid(file: string): number | undefined {
  try {
    const n = Number(readFileSync(file, "utf8").trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

function readText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

function kill(pid: number, signal: NodeJS.Signals = "SIGKILL"): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Gone already.
  }
}

/** Alive and not a zombie (PID 1 here reaps late). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

async function terminate(pid: number, graceMs: number): Promise<void> {
  kill(pid, "SIGTERM");
  const deadline = performance.now() + graceMs;
  while (running(pid) && performance.now() < deadline) await Bun.sleep(20);
  if (running(pid)) kill(pid);
}

function terminateSync(pid: number, graceMs: number): void {
  kill(pid, "SIGTERM");
  const deadline = performance.now() + graceMs;
  while (running(pid) && performance.now() < deadline) Bun.sleepSync(20);
  if (running(pid)) kill(pid);
}

function namespaceInode(ns: string): number | undefined {
  try {
    return statSync(`/run/netns/${ns}`).ino;
  } catch {
    return undefined;
  }
}

function netnsInode(pid: number): number | undefined {
  try {
    const m = /^net:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/ns/net`));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function inNamespace(pid: number, ns: string): boolean {
  const ino = namespaceInode(ns);
  return ino !== undefined && netnsInode(pid) === ino;
}

function namespacePids(ns: string): number[] {
  if (!existsSync(`/run/netns/${ns}`)) return [];
  const r = Bun.spawnSync(["ip", "netns", "pids", ns], { stdin: "ignore", stdout: "pipe", stderr: "ignore" });
  return r.stdout
    .toString()
    .split(/\s+/)
    .map(Number)
    .filter((n) => Number.isInteger(n) && n > 0 && n !== process.pid);
}

function groupId(name: string): number | undefined {
  for (const line of readText("/etc/group").split("\n")) {
    const [group, , gid] = line.split(":");
    if (group === name) return Number(gid);
  }
  return undefined;
}

interface Subnet {
  readonly network: string;
  readonly prefix: number;
  readonly netmask: string;
  host(n: number): string;
}

/** Subnets inside 10.0.0.0/8 only: test traffic must stay inside namespaces this fixture creates. */
export function parseSubnet(text: string): Subnet {
  const cidr = parseCidr(text);
  if (cidr.base >>> 24 !== 10 || cidr.prefix < 8 || cidr.prefix > 30) {
    throw new Error(`test subnets must be inside 10.0.0.0/8 with a prefix of 8–30, not ${text}`);
  }
  return {
    network: formatIpv4(cidr.base),
    prefix: cidr.prefix,
    netmask: formatIpv4(2 ** 32 - cidr.size),
    host: (n) => formatIpv4(cidr.base + n),
  };
}

function attr(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("'", "&apos;").replaceAll('"', "&quot;").replaceAll("<", "&lt;");
}

function text(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}
