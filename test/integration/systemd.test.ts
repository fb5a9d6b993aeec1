/** The shipped systemd unit: systemd's own checks, and `make install` laying everything out under DESTDIR. */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { BINARY, tempDir } from "../support/daemon.ts";
import { sh } from "../support/processes.ts";

const ROOT = resolve(import.meta.dir, "../..");
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

async function run(argv: string[], cwd = ROOT) {
  const { code, stdout, stderr } = await sh(argv, { allowFail: true, cwd });
  return { code, output: stdout + stderr };
}

/** The unit with ExecStart pointing at the built binary (verify checks that the executable exists). */
function unitForThisMachine(): string {
  const dir = tempDir("ippool-unit-");
  dirs.push(dir);
  const unit = readFileSync(join(ROOT, "systemd/ippool.service"), "utf8").replace(
    /^ExecStart=\/usr\/local\/bin\/ippool/m,
    `ExecStart=${BINARY}`,
  );
  const path = join(dir, "ippool.service");
  writeFileSync(path, unit);
  return path;
}

describe("systemd/ippool.service", () => {
  test("systemd-analyze verify prints nothing", async () => {
    const result = await run(["systemd-analyze", "verify", unitForThisMachine()]);
    expect(result.output).toBe("");
    expect(result.code).toBe(0);
  });

  test("systemd-analyze security --offline scores its exposure at 2.0 or less", async () => {
    const result = await run(["systemd-analyze", "security", "--offline=true", unitForThisMachine()]);
    const score = /Overall exposure level for ippool\.service: (\d+\.\d+)/.exec(result.output)?.[1];
    expect(score).toBeDefined();
    expect(Number(score)).toBeLessThanOrEqual(2.0);
  });
});

describe("make install", () => {
  test("puts binary, unit and example config under DESTDIR and keeps an existing config", async () => {
    const destdir = tempDir("ippool-install-");
    dirs.push(destdir);
    const first = await run(["make", "--no-print-directory", "install", `DESTDIR=${destdir}`]);
    expect(first.code).toBe(0);
    expect(statSync(join(destdir, "usr/local/bin/ippool")).mode & 0o777).toBe(0o755);
    expect(existsSync(join(destdir, "lib/systemd/system/ippool.service"))).toBe(true);
    expect(statSync(join(destdir, "etc/libvirt/hooks/qemu")).mode & 0o777).toBe(0o755);
    const config = join(destdir, "etc/ippool/ippool.toml");
    expect(readFileSync(config, "utf8")).toContain("[[pools]]");
    writeFileSync(config, "# mine\n");
    expect((await run(["make", "--no-print-directory", "install", `DESTDIR=${destdir}`])).code).toBe(0);
    expect(readFileSync(config, "utf8")).toBe("# mine\n");
  });

  test("PREFIX=/usr puts the binary in /usr/bin, and the unit and the hook run it from there", async () => {
    const destdir = tempDir("ippool-install-");
    dirs.push(destdir);
    expect((await run(["make", "--no-print-directory", "install", `DESTDIR=${destdir}`, "PREFIX=/usr"])).code).toBe(0);
    expect(existsSync(join(destdir, "usr/bin/ippool"))).toBe(true);
    const unit = readFileSync(join(destdir, "lib/systemd/system/ippool.service"), "utf8");
    expect(unit).toContain("ExecStart=/usr/bin/ippool ");
    expect(unit).not.toContain("/usr/local/");
    const hook = readFileSync(join(destdir, "etc/libvirt/hooks/qemu"), "utf8");
    expect(hook).toContain("IPPOOL_BIN:-/usr/bin/ippool}");
    expect(hook).not.toContain("/usr/local/bin/ippool");
  });

  test("an earlier ippool hook is replaced in place, not moved aside", async () => {
    const destdir = tempDir("ippool-install-");
    dirs.push(destdir);
    expect((await run(["make", "--no-print-directory", "install", `DESTDIR=${destdir}`])).code).toBe(0);
    writeFileSync(join(destdir, "etc/libvirt/hooks/qemu"), "#!/bin/sh\nlogger -t ippool-hook -- old\n");
    expect((await run(["make", "--no-print-directory", "install", `DESTDIR=${destdir}`])).code).toBe(0);
    expect(readFileSync(join(destdir, "etc/libvirt/hooks/qemu"), "utf8")).toContain("prepare/begin | reconnect/begin");
    expect(existsSync(join(destdir, "etc/libvirt/hooks/qemu.d/ippool"))).toBe(false);
  });

  test("never replaces another libvirt hook: ippool's goes to qemu.d/ then", async () => {
    const destdir = tempDir("ippool-install-");
    dirs.push(destdir);
    mkdirSync(join(destdir, "etc/libvirt/hooks"), { recursive: true });
    writeFileSync(join(destdir, "etc/libvirt/hooks/qemu"), "#!/bin/sh\n# someone else's\n");
    expect((await run(["make", "--no-print-directory", "install", `DESTDIR=${destdir}`])).code).toBe(0);
    expect(readFileSync(join(destdir, "etc/libvirt/hooks/qemu"), "utf8")).toContain("someone else's");
    expect(existsSync(join(destdir, "etc/libvirt/hooks/qemu.d/ippool"))).toBe(true);
  });
});
