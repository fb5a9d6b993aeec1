/**
 * Real OpenSSH servers in network namespaces: the config the suites give them, and sshd started in
 * a private mount namespace where /root/.bashrc is empty (root's login shell setup here costs
 * ~100 ms per exec) and as PID 1 of its own PID namespace (killing it ends every process started
 * over SSH). The namespace testbed runs one per fake host; `startSshd` runs one for a suite whose
 * "host" is a namespace of its own (the real-libvirt suite).
 */

import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { sh, waitFor } from "./processes.ts";

export const SSHD = "/usr/sbin/sshd";

export interface SshdConfig {
  readonly port: number;
  readonly address: string;
  readonly hostKeyPath: string;
  readonly pidFile: string;
  readonly authorizedKeys: string;
  /** More lines, e.g. a ForceCommand. */
  readonly extra?: readonly string[];
}

/** An sshd_config for root logins by key only, many sessions at once, no PAM, no strict modes. */
export function sshdConfigText(config: SshdConfig): string {
  return [
    `Port ${config.port}`,
    `ListenAddress ${config.address}`,
    `HostKey ${config.hostKeyPath}`,
    `PidFile ${config.pidFile}`,
    `AuthorizedKeysFile ${config.authorizedKeys}`,
    "StrictModes no",
    "UsePAM no",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PermitRootLogin prohibit-password",
    "MaxSessions 64",
    "MaxStartups 64",
    "PrintMotd no",
    "LogLevel INFO",
    ...(config.extra ?? []),
    "",
  ].join("\n");
}

/**
 * `sshd -D -f config` in `netns` (see the module comment); resolves once it listens, with its
 * process. `emptyFile` is bind-mounted over /root/.bashrc; `log` receives sshd's stderr.
 */
export async function spawnSshd(netns: string, config: string, log: string, emptyFile: string): Promise<Subprocess> {
  if (!existsSync("/run/sshd")) mkdirSync("/run/sshd", { mode: 0o755, recursive: true });
  const script = existsSync("/root/.bashrc")
    ? `mount --bind "$1" /root/.bashrc && exec ${SSHD} -D -e -f "$2"`
    : `exec ${SSHD} -D -e -f "$2"`;
  const fd = openSync(log, "w");
  const proc = Bun.spawn(
    [
      ...["ip", "netns", "exec", netns],
      ...["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child=SIGKILL"],
      ...["sh", "-c", script, "sh", emptyFile, config],
    ],
    { stdin: "ignore", stdout: "ignore", stderr: fd },
  );
  closeSync(fd);
  try {
    await waitFor(
      () => {
        if (proc.exitCode !== null) throw new Error(`sshd in ${netns} exited: ${readFileSync(log, "utf8")}`);
        return readFileSync(log, "utf8").includes("Server listening on");
      },
      10_000,
      () => `sshd in ${netns} did not start: ${readFileSync(log, "utf8")}`,
    );
  } catch (error) {
    proc.kill("SIGKILL");
    throw error;
  }
  return proc;
}

export interface Sshd {
  readonly address: string;
  readonly port: number;
  /** The client's private key (mode 0600), for the daemon's `[[hosts]] private_key`. */
  readonly privateKey: string;
  /** `SHA256:...` as `ssh-keygen -lf` prints it, for `[[hosts]] host_key`. */
  readonly hostKey: string;
  stop(): void;
}

/** An sshd in `netns` with throwaway host and client keys under `dir`. */
export async function startSshd(netns: string, dir: string, address = "127.0.0.1", port = 2222): Promise<Sshd> {
  mkdirSync(dir, { recursive: true });
  const hostKeyPath = join(dir, "ssh_host_ed25519_key");
  const privateKey = join(dir, "id_ed25519");
  await sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ippool-test-host", "-f", hostKeyPath]);
  await sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ippool-test-client", "-f", privateKey]);
  chmodSync(privateKey, 0o600);
  const authorizedKeys = join(dir, "authorized_keys");
  writeFileSync(authorizedKeys, readFileSync(`${privateKey}.pub`));
  writeFileSync(join(dir, "empty"), "");
  const hostKey = (await sh(["ssh-keygen", "-lf", `${hostKeyPath}.pub`])).stdout.split(/\s+/)[1] ?? "";
  const config = join(dir, "sshd_config");
  writeFileSync(config, sshdConfigText({ port, address, hostKeyPath, pidFile: join(dir, "sshd.pid"), authorizedKeys }));
  await sh([SSHD, "-t", "-f", config]);
  const proc = await spawnSshd(netns, config, join(dir, "sshd.log"), join(dir, "empty"));
  return { address, port, privateKey, hostKey, stop: () => proc.kill("SIGKILL") };
}
