/**
 * A tiny bootable guest for real QEMU (TCG) domains: Debian's kernel, booted directly, and an
 * initramfs of busybox-static whose /init loads the virtio net modules, takes a DHCP lease on eth0
 * with `udhcpc` (keeping and renewing it) and runs a TCP echo responder on port 7.
 *
 * The guest reports on its serial console (one line each, nothing else on the line):
 *   IPPOOL-GUEST up mac=52:54:00:...                  eth0 is up, DHCP starts
 *   IPPOOL-GUEST bound ip=10.123.0.50 mac=52:54:...   first lease (address and default route set)
 *   IPPOOL-GUEST renew ip=10.123.0.50 mac=52:54:...   lease renewed (the address may have changed)
 *   IPPOOL-GUEST deconfig                             address dropped (start, NAK, lease lost)
 *   IPPOOL-GUEST nak|leasefail ...                    for the curious
 *   IPPOOL-GUEST poweroff                             ACPI power button pressed (virsh shutdown)
 *
 * Built once and cached in /var/cache/ippool-test/guest-<hash of the scripts>; a later call only
 * checks that the files are there.
 */
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { sh } from "./processes.ts";

export interface GuestImage {
  /** The uncompressed ELF `vmlinux` (PVH entry) when it could be extracted, else `vmlinuz`. */
  readonly kernel: string;
  /** An uncompressed newc cpio archive. */
  readonly initrd: string;
}

const CACHE_ROOT = "/var/cache/ippool-test";
const REPO = join(import.meta.dir, "..", "..");

/** Modules in load order (the kernel package ships no modules.dep, so no modprobe). */
export const GUEST_MODULES = [
  "virtio_ring",
  "virtio",
  "virtio_pci_modern_dev",
  "virtio_pci_legacy_dev",
  "virtio_pci",
  "failover",
  "net_failover",
  "virtio_net",
] as const;

/** For `virsh shutdown`: the ACPI power button, watched through evdev; a press powers the guest off. */
const POWER_MODULES = ["button", "evdev"] as const;

const INIT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
for m in ${GUEST_MODULES.join(" ")}; do
  insmod /lib/modules/$m.ko || echo "IPPOOL-GUEST insmod-failed $m"
done
for m in ${POWER_MODULES.join(" ")}; do insmod /lib/modules/$m.ko 2>/dev/null; done
for d in /sys/class/input/input*; do
  [ "$(cat $d/name 2>/dev/null)" = "Power Button" ] || continue
  for e in $d/event*; do
    [ -e "$e" ] || continue
    (head -c 1 /dev/input/\${e##*/} >/dev/null && echo "IPPOOL-GUEST poweroff" && poweroff -f) &
  done
done
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ]; do
  i=$((i + 1)); [ $i -gt 300 ] && { echo "IPPOOL-GUEST no-eth0"; break; }
  sleep 0.05
done
ip link set eth0 up
i=0
while [ "$(cat /sys/class/net/eth0/operstate 2>/dev/null)" != up ]; do
  i=$((i + 1)); [ $i -gt 300 ] && { echo "IPPOOL-GUEST eth0-not-up"; break; }
  sleep 0.05
done
nc -ll -p 7 -e cat &
echo "IPPOOL-GUEST up mac=$(cat /sys/class/net/eth0/address)"
# Foreground, never quits: keeps the lease and renews it; retries quickly when no server answers.
while true; do
  udhcpc -f -i eth0 -s /etc/udhcpc.script -t 5 -T 2 -A 2
  sleep 1
done
`;

const UDHCPC_SCRIPT = `#!/bin/sh
mac=$(cat /sys/class/net/$interface/address)
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    echo "IPPOOL-GUEST deconfig" >/dev/console
    ;;
  bound|renew)
    if ! ip -4 addr show dev "$interface" | grep -q " $ip/$mask "; then
      ip -4 addr flush dev "$interface"
      ip addr add "$ip/$mask" \${broadcast:+broadcast $broadcast} dev "$interface"
    fi
    if [ -n "$router" ]; then
      ip route replace default via "\${router%% *}" dev "$interface"
    fi
    echo "IPPOOL-GUEST $1 ip=$ip mac=$mac" >/dev/console
    ;;
  nak)
    echo "IPPOOL-GUEST nak $message" >/dev/console
    ;;
  leasefail)
    echo "IPPOOL-GUEST leasefail" >/dev/console
    ;;
esac
exit 0
`;

const FORMAT = "ippool-guest-v1";

let pending: Promise<GuestImage> | undefined;

/** Builds (once per script version, cached on disk) and returns the guest's kernel and initramfs. */
export function guestImage(): Promise<GuestImage> {
  pending ??= build().catch((error: unknown) => {
    pending = undefined;
    throw error;
  });
  return pending;
}

async function build(): Promise<GuestImage> {
  const hash = createHash("sha256").update(FORMAT).update(INIT).update(UDHCPC_SCRIPT).digest("hex").slice(0, 16);
  const dir = join(CACHE_ROOT, `guest-${hash}`);
  const manifest = join(dir, "image.json");
  if (existsSync(manifest)) {
    const image = JSON.parse(readFileSync(manifest, "utf8")) as GuestImage;
    if (existsSync(image.kernel) && existsSync(image.initrd)) return image;
  }

  await sh(["bash", join(REPO, "hooks", "install-packages"), "busybox-static", "cpio", "xz-utils"]);
  mkdirSync(CACHE_ROOT, { recursive: true, mode: 0o755 });
  chmodSync(CACHE_ROOT, 0o755);
  // Build next to the final place, then rename: a concurrent or interrupted build never leaves half a guest.
  const work = mkdtempSync(join(CACHE_ROOT, `.build-${hash}-`));
  try {
    chmodSync(work, 0o755); // apt-get download drops privileges to _apt when it can
    const out = join(work, "out");
    mkdirSync(out, { mode: 0o755 });

    // Kernel: the package linux-image-amd64 points at, downloaded and unpacked (never installed).
    const pkg = await kernelPackage();
    await sh(["apt-get", "download", "-q", pkg], { cwd: work });
    const deb = readdirSync(work).find((f) => f.startsWith(`${pkg}_`) && f.endsWith(".deb"));
    if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${work}`);
    const unpacked = join(work, "pkg");
    await sh(["dpkg-deb", "-x", join(work, deb), unpacked]);
    const bootFiles = readdirSync(join(unpacked, "boot"));
    const vmlinuzName = bootFiles.find((f) => f.startsWith("vmlinuz-"));
    if (!vmlinuzName) throw new Error(`no vmlinuz in ${pkg}`);
    const release = vmlinuzName.slice("vmlinuz-".length);
    const vmlinuz = join(unpacked, "boot", vmlinuzName);
    let kernelName = "vmlinuz";
    const elf = await extractVmlinux(vmlinuz).catch(() => undefined);
    if (elf) writeFileSync(join(out, "vmlinux"), elf, { mode: 0o644 });
    else writeFileSync(join(out, kernelName), readFileSync(vmlinuz), { mode: 0o644 });
    if (elf) kernelName = "vmlinux";

    // initramfs: busybox-static, the modules, /init and the udhcpc script.
    const root = join(work, "root");
    for (const d of ["bin", "dev", "etc", "lib/modules", "proc", "sys", "tmp"])
      mkdirSync(join(root, d), { recursive: true });
    writeFileSync(join(root, "bin", "busybox"), readFileSync("/bin/busybox"), { mode: 0o755 });
    writeFileSync(join(root, "init"), INIT, { mode: 0o755 });
    writeFileSync(join(root, "etc", "udhcpc.script"), UDHCPC_SCRIPT, { mode: 0o755 });
    const moduleRoot = join(unpacked, "lib", "modules", release, "kernel");
    const allModules = (await sh(["find", moduleRoot, "-name", "*.ko*"])).stdout.trim().split("\n");
    for (const name of [...GUEST_MODULES, ...POWER_MODULES]) {
      const file = allModules.find((p) => p.endsWith(`/${name}.ko`));
      if (!file) throw new Error(`module ${name}.ko not found in ${pkg} (compressed modules are not handled)`);
      writeFileSync(join(root, "lib", "modules", `${name}.ko`), readFileSync(file), { mode: 0o644 });
    }
    await sh(["mknod", "-m", "600", join(root, "dev", "console"), "c", "5", "1"]);
    await sh([
      "sh",
      "-c",
      `cd '${root}' && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet > '${join(out, "initrd.cpio")}'`,
    ]);
    chmodSync(join(out, "initrd.cpio"), 0o644);
    writeFileSync(join(out, "kernel-package"), `${pkg}\n${release}\n`);

    const image: GuestImage = { kernel: join(dir, kernelName), initrd: join(dir, "initrd.cpio") };
    writeFileSync(join(out, "image.json"), `${JSON.stringify(image)}\n`, { mode: 0o644 });
    rmSync(dir, { recursive: true, force: true });
    renameSync(out, dir);
    return image;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** `linux-image-6.1.0-N-amd64`: what the linux-image-amd64 metapackage depends on, else the newest listed. */
async function kernelPackage(): Promise<string> {
  let depends = await sh(["apt-cache", "depends", "linux-image-amd64"], { allowFail: true });
  if (depends.code !== 0) {
    // A machine whose package lists were never fetched (every other package was already installed).
    await sh(["apt-get", "update", "-qq"]);
    depends = await sh(["apt-cache", "depends", "linux-image-amd64"], { allowFail: true });
  }
  const fromMeta = /Depends:\s*(linux-image-6\.1\.0-\d+-amd64)\b/.exec(depends.stdout)?.[1];
  if (fromMeta) return fromMeta;
  const search = await sh(["apt-cache", "search", "--names-only", "^linux-image-6\\.1\\.0-[0-9]+-amd64$"]);
  const names = search.stdout
    .split("\n")
    .map((line) => line.split(" ")[0] ?? "")
    .filter((n) => /^linux-image-6\.1\.0-\d+-amd64$/.test(n))
    .sort((a, b) => Number(/-(\d+)-amd64$/.exec(b)?.[1]) - Number(/-(\d+)-amd64$/.exec(a)?.[1]));
  if (!names[0]) throw new Error("apt-cache knows no linux-image-6.1.0-*-amd64 package (run apt-get update?)");
  return names[0];
}

/**
 * The ELF kernel inside a bzImage: the setup header gives the compressed payload's offset and
 * length (boot protocol ≥ 2.08); Debian compresses it with xz. Returns undefined if it is anything else.
 */
async function extractVmlinux(bzImage: string): Promise<Uint8Array | undefined> {
  const data = readFileSync(bzImage);
  if (data.readUInt32LE(0x202) !== 0x53726448) return undefined; // "HdrS"
  const setupSects = data[0x1f1] || 4;
  const payloadOffset = data.readUInt32LE(0x248);
  const payloadLength = data.readUInt32LE(0x24c);
  const start = (setupSects + 1) * 512 + payloadOffset;
  const payload = data.subarray(start, start + payloadLength);
  const xzMagic = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
  if (!payload.subarray(0, 6).equals(xzMagic)) return undefined;
  const proc = Bun.spawn(["xz", "-dc", "--single-stream"], { stdin: payload, stdout: "pipe", stderr: "ignore" });
  const [elf, code] = await Promise.all([new Response(proc.stdout).arrayBuffer(), proc.exited]);
  const bytes = new Uint8Array(elf);
  if (code !== 0 || bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c || bytes[3] !== 0x46) return undefined;
  return bytes;
}
