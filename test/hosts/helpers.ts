/** Shared set-up for the host-driver suites: a registry over the testbed's hosts, reached from the test process. */
import type { HostDefinition } from "../../src/config/config.ts";
import type { ConnectionTuning, Host } from "../../src/hosts/host.ts";
import { HostRegistry } from "../../src/hosts/registry.ts";
import type { Testbed } from "../support/testbed.ts";

/** Fast reconnects and keepalives so the suites stay short. */
export const FAST: ConnectionTuning = {
  backoffInitialMs: 50,
  backoffMaxMs: 400,
  keepaliveIntervalMs: 1000,
  keepaliveCountMax: 3,
};

/** A started registry whose hosts are all connected. */
export async function connectedRegistry(
  bed: Testbed,
  change: (definitions: HostDefinition[]) => HostDefinition[] = (d) => d,
): Promise<HostRegistry> {
  const registry = new HostRegistry(change(await bed.localHostDefinitions()), { tuning: FAST });
  registry.start();
  await Promise.all(registry.all().map((host) => host.connection.waitConnected(5000)));
  return registry;
}

/**
 * Waits until the host answers a command. After a host was down, `connected` can still be true
 * for a moment: the drop of the old connection may be noticed only after the host is back.
 */
export async function answering(host: Host, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await host.connection.exec(["true"]).then(
      (result) => result.code === 0,
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`host ${host.name} did not answer within ${timeoutMs} ms`);
    await Bun.sleep(50);
  }
}
