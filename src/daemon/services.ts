/**
 * The daemon's composition root: the store, the services over it, the hosts, metrics and the
 * HTTP app, wired together from the configuration. The stored pools adopt the configured layouts
 * here (`adoptPoolLayouts`), before anything can serve a request.
 */
import { AdminGate, isLoopback } from "../auth/admin.ts";
import { ProjectDirectory } from "../auth/projects.ts";
import type { Config } from "../config/config.ts";
import { DhcpDelivery } from "../dhcp/delivery.ts";
import { LocalDnsmasq } from "../dhcp/dnsmasq.ts";
import { LibvirtLeases } from "../dhcp/leases.ts";
import { DhcpReservations } from "../dhcp/reservations.ts";
import { ReservationResync } from "../dhcp/resync.ts";
import { EipAssociations } from "../eip/association.ts";
import { KeyedLocks } from "../eip/locks.ts";
import { EipReconciler } from "../eip/reconcile.ts";
import { EipService, publicPoolLayouts } from "../eip/service.ts";
import { HostRegistry } from "../hosts/index.ts";
import { createApp, type RequestObserver } from "../http/app.ts";
import type { Logger } from "../log/logger.ts";
import { createDaemonMetrics } from "../metrics/index.ts";
import type { Allocation } from "../pool/allocator.ts";
import { PoolLayout } from "../pool/layout.ts";
import { LeakDetector } from "../pool/leaks.ts";
import { PoolService } from "../pool/service.ts";
import { adoptPoolLayouts } from "../pool/startup.ts";
import { VERSION } from "../version.ts";
import { SshHostGateway } from "./host-gateway.ts";
import type { DaemonStore } from "./store.ts";

export interface DaemonParts {
  readonly hosts: HostRegistry;
  readonly projects: ProjectDirectory;
  readonly adminGate: AdminGate;
  readonly reconciler: EipReconciler;
  readonly leaks: LeakDetector;
  /** Brings the DHCP reservation files in line with the store; awaited before serving. */
  syncReservations(): Promise<void>;
  /** The same every reconciliation interval, in fleet mode (started once serving). */
  readonly reservationResync: ReservationResync;
  readonly app: ReturnType<typeof createApp>;
  /** Told about every request, for the HTTP metrics. */
  readonly requests: RequestObserver;
}

/** Builds the services on `store`, opened by the caller (store/integrity.ts), which also closes it. */
export async function wireServices(
  config: Config,
  logger: Logger,
  runtime: "bun" | "deno",
  { store, lmdb, shared }: DaemonStore,
): Promise<DaemonParts> {
  // The gauges read the services below at scrape time, once the listeners are up.
  const metrics = createDaemonMetrics({
    build: { version: VERSION, runtime },
    pools: {
      pools: [
        ...config.pools.map((pool) => ({ pool: pool.name, kind: "vm" as const })),
        ...config.eipPools.map((pool) => ({ pool: pool.name, kind: "eip" as const })),
      ],
      usage: async () => [...(await pools.usage()), ...(await eips.usage())],
    },
    eips: {
      pools: config.eipPools.map((pool) => pool.name),
      projects: () => projects.names(),
      count: (pool, project, state) => store.read((view) => view.countEips(pool, project, state)),
    },
    hostNames: config.hosts.map((host) => host.name),
    hosts: { hosts: () => hosts.all() },
    ...(lmdb === undefined ? {} : { store: lmdb }),
    ...(shared === undefined ? {} : { fleet: shared }),
  });
  const layouts = config.pools.map((definition) => new PoolLayout(definition));
  const eipPools = publicPoolLayouts(config.eipPools);
  await adoptPoolLayouts(store, [...layouts, ...eipPools.values()]);
  const indexed = lmdb?.ensureEipStateIndex() ?? 0;
  if (indexed > 0) logger.info("indexed elastic IPs by state", { eips: indexed });
  const pools = new PoolService(store, layouts, config.defaultPool, metrics.pools);
  /** In fleet mode, this daemon's name: its host's, where host-bound work (DHCP, leak collection) is limited to it. */
  const fleetDaemon = config.store.backend === "postgres" ? config.store.daemon : undefined;
  const dhcp = new DhcpDelivery(
    new DhcpReservations(config.dhcp.dir, new LocalDnsmasq(config.dhcp.dir, config.dhcp.libvirtRunDir, logger), logger),
    new LibvirtLeases(config.dhcp.libvirtRunDir, config.dhcp.libvirtLeaseDir),
    logger,
    fleetDaemon,
  );
  pools.setDelivery(dhcp, config.dhcp.links);
  const eips = new EipService(store, eipPools, config.defaultEipPool, metrics.pools);

  const hosts = new HostRegistry(config.hosts, { logger, events: metrics.hostCommands });
  const gateway = new SshHostGateway(
    hosts,
    config.eipPools.map((pool) => pool.cidr),
  );
  // One daemon alone serialises in process; a fleet's daemons through the database as well.
  const locks = shared?.eipLocks() ?? new KeyedLocks();
  const associations = new EipAssociations(store, gateway, pools, locks, logger, metrics.associations);
  pools.setAddressDependents(associations);
  const reconciler = new EipReconciler(store, gateway, locks, logger, metrics.reconciliation);
  // Reconciliation listens for connections before the hosts start connecting.
  reconciler.start(config.reconcileIntervalS);
  hosts.start();
  const leaks = new LeakDetector(pools, gateway, config.leakGracePeriodS, {
    events: metrics.leaks,
    logger,
    collectOwnHostsOnly: fleetDaemon !== undefined,
    jobs: store,
  });
  if (config.hosts.length > 0) leaks.start(config.leakCollectIntervalS);
  const projects = new ProjectDirectory(config.projects);
  const adminGate = poolApiDoor(config, logger);
  const app = createApp({ pools, eips, associations, projects, adminGate, leaks, metrics: metrics.registry }, logger);
  const servedPools = [...new Set(config.dhcp.links.map((link) => link.pool))];
  // A fleet daemon delivers its own host's VMs only: it reads those, not every host's.
  const deliverable = async (pool: string): Promise<Allocation[]> => {
    if (shared === undefined || fleetDaemon === undefined) return pools.allocations(pool);
    const onHost = await shared.allocationsOnHost(pool, fleetDaemon);
    return onHost.map(({ vmId, record }) => ({ pool, vmId, ...record }));
  };
  const syncReservations = () =>
    dhcp.sync(config.dhcp.links, async () => (await Promise.all(servedPools.map(deliverable))).flat());
  const reservationResync = new ReservationResync(fleetDaemon !== undefined, syncReservations, logger);
  return {
    hosts,
    projects,
    adminGate,
    reconciler,
    leaks,
    syncReservations,
    reservationResync,
    app,
    requests: metrics.requests,
  };
}

function poolApiDoor(config: Config, logger: Logger): AdminGate {
  const gate = new AdminGate(config.adminKeySha256, adminKeyRequired(config));
  warnOfPoolApiDoor(config, logger);
  return gate;
}

/** Whether the pool API asks TCP callers for the admin key: beyond loopback, unless opened on purpose. */
export function adminKeyRequired(config: Config): boolean {
  return config.listen !== null && !isLoopback(config.listen.hostname) && !config.openPoolApi;
}

/**
 * Warns (at start and at each reload) when the pool API's TCP door is not the safe default: shut
 * with no key to open it, or open to anyone by `server.open_pool_api` (the original's way, chosen
 * on purpose).
 */
export function warnOfPoolApiDoor(config: Config, logger: Logger): void {
  const { listen } = config;
  if (listen === null || isLoopback(listen.hostname)) return;
  if (config.openPoolApi) {
    logger.warn("pool API open", {
      listen: `${listen.hostname}:${listen.port}`,
      reason: "server.open_pool_api = true: anyone who reaches this listener can allocate and release addresses",
    });
  } else if (config.adminKeySha256 === null) {
    logger.warn("TCP listens beyond loopback and server.admin_key_sha256 is not set: the pool API refuses TCP calls");
  }
}
