/**
 * Associating an EIP with an instance and taking it away again. The host is changed first and
 * the record after, so a failed host change (502) leaves the recorded state as it was, and a
 * crash in between leaves extra rules that reconciliation removes. Moving an EIP
 * (`allowReassociation`) never waits for the old host: if it is down, reconciliation cleans it
 * up when it comes back.
 */
import type { ProjectDefinition } from "../config/config.ts";
import { AppError } from "../errors.ts";
import type { Logger } from "../log/logger.ts";
import { formatIpv4 } from "../net/ipv4.ts";
import { fail, type Outcome } from "../outcome.ts";
import type { Allocation } from "../pool/allocator.ts";
import type { AddressDependents } from "../pool/dependents.ts";
import type { PoolService } from "../pool/service.ts";
import type { StepStore } from "../store/steps.ts";
import { BackgroundWork } from "./background.ts";
import {
  AlreadyAssociatedError,
  EipNotFoundError,
  InstanceHasEipError,
  InstanceHasNoAddressError,
  InstanceNotFoundError,
  InstanceNotRunningError,
  NotAssociatedError,
} from "./errors.ts";
import { type AssociationEvents, type AssociationOperation, NO_ASSOCIATION_EVENTS } from "./events.ts";
import type { HostGateway } from "./hosts.ts";
import type { EipLocks } from "./locks.ts";
import { ownedEip } from "./service.ts";
import type { EipRecord } from "./store.ts";

export interface AssociateRequest {
  readonly instanceId: string;
  readonly allowReassociation?: boolean;
}

interface InstancePlacement {
  readonly host: string;
  readonly privateIp: number;
}

export class EipAssociations implements AddressDependents {
  private readonly background = new BackgroundWork();

  constructor(
    private readonly store: StepStore,
    private readonly hosts: HostGateway,
    private readonly pools: PoolService,
    /** Shared with reconciliation: EIP and instance locks first, host locks last. */
    private readonly locks: EipLocks,
    private readonly logger: Logger,
    private readonly events: AssociationEvents = NO_ASSOCIATION_EVENTS,
  ) {}

  associate(project: ProjectDefinition, id: string, request: AssociateRequest): Promise<EipRecord> {
    return this.observed("associate", () => this.associateNow(project, id, request));
  }

  /** Resolves once every old host's clean-up started by a move has ended. */
  settled(): Promise<void> {
    return this.background.settled();
  }

  disassociate(project: ProjectDefinition, id: string): Promise<EipRecord> {
    return this.observed("disassociate", () => this.disassociateNow(project, id));
  }

  /** Runs one operation and reports how it ended: its duration on success, its error code on failure. */
  private async observed(operation: AssociationOperation, work: () => Promise<EipRecord>): Promise<EipRecord> {
    const started = performance.now();
    try {
      const result = await work();
      this.events.succeeded(operation, (performance.now() - started) / 1000);
      return result;
    } catch (error) {
      this.events.failed(operation, error instanceof AppError ? error.code : "INTERNAL");
      throw error;
    }
  }

  private async associateNow(project: ProjectDefinition, id: string, request: AssociateRequest): Promise<EipRecord> {
    // Another project's EIP is a missing one, whatever the instance: checked before it is looked up.
    await this.owned(project, id);
    const instance = await this.identify(request.instanceId);
    return this.locks.run([`eip:${id}`, `instance:${instance.vmId}`], async () => {
      const eip = await this.owned(project, id);
      if (eip.state === "associated" && eip.instanceId === instance.vmId) return eip;
      if (eip.state === "associated" && !request.allowReassociation) {
        throw new AlreadyAssociatedError(
          `${id} is associated with ${eip.instanceId}; send allow_reassociation: true to move it`,
        );
      }
      const holder = await this.store.read((view) => view.eipOfInstance(instance.vmId));
      if (holder !== undefined && holder !== id) {
        throw new InstanceHasEipError(`${request.instanceId} (${instance.vmId}) already has ${holder}`);
      }
      // Read again under the instance lock: its address may have been released meanwhile.
      const allocation = instance.allocation && (await this.pools.find(instance.vmId));
      if (instance.allocation && !allocation) {
        throw new InstanceHasNoAddressError(
          `${request.instanceId}'s address was released while it was being associated`,
        );
      }
      const target = await this.place(request.instanceId, allocation, instance.host);
      const updated: EipRecord = {
        ...eip,
        state: "associated",
        instanceId: instance.vmId,
        host: target.host,
        privateIp: target.privateIp,
        associatedAt: Date.now(),
      };
      await this.locks.run([`host:${target.host}`], async () => {
        // A release does not take the EIP lock: it may have removed the EIP while the instance was
        // looked up (checked here, before the host is touched) or while the host is changed
        // (checked in the write). Either way the release stands and this association answers 404.
        await this.owned(project, id);
        // Same host, other VM: the old pair must go before the new one replaces it.
        if (eip.host === target.host && eip.privateIp !== target.privateIp) {
          await this.hosts.remove(target.host, eip.publicIp);
        }
        await this.hosts.apply(target.host, { eip: eip.publicIp, privateIp: target.privateIp });
        const recorded = await this.store.write((view): Outcome<void> => {
          if (view.getEip(id) === undefined) return fail(releasedMeanwhile(id));
          view.putEip(updated);
          if (eip.instanceId !== undefined && eip.instanceId !== instance.vmId) view.removeInstanceEip(eip.instanceId);
          view.putInstanceEip(instance.vmId, id);
          return { ok: true, value: undefined };
        });
        if (!recorded.ok) {
          await this.withdraw(target.host, eip);
          throw recorded.error;
        }
      });
      if (eip.host !== undefined && eip.host !== target.host) this.background.track(this.cleanUpOldHost(eip.host, eip));
      return updated;
    });
  }

  private disassociateNow(project: ProjectDefinition, id: string): Promise<EipRecord> {
    return this.locks.run([`eip:${id}`], async () => {
      const eip = await this.owned(project, id);
      if (eip.state !== "associated" || eip.host === undefined || eip.instanceId === undefined) {
        throw new NotAssociatedError(`${id} is not associated`);
      }
      return this.detach(eip, eip.host, eip.instanceId);
    });
  }

  /**
   * Implements `AddressDependents` for the pools: before VMs' addresses are freed, their EIPs are
   * disassociated (host rules removed, or left to reconciliation if the host is down) and the VMs
   * stay locked until `release` has written, so no association can target a freed address.
   */
  async releasing<T>(vmIds: readonly string[], release: () => Promise<T>): Promise<T> {
    for (;;) {
      const eipIds = await this.eipsOf(vmIds);
      const keys = [...eipIds.map((eipId) => `eip:${eipId}`), ...vmIds.map((vmId) => `instance:${vmId}`)];
      const outcome = await this.locks.run(keys, async () => {
        // An association that held these VMs' locks may have given one an EIP: lock that too.
        if ((await this.eipsOf(vmIds)).join() !== eipIds.join()) return null;
        for (const eipId of eipIds) {
          const eip = await this.store.read((view) => view.getEip(eipId));
          if (eip?.state !== "associated" || eip.host === undefined || eip.instanceId === undefined) continue;
          await this.detach(eip, eip.host, eip.instanceId);
          this.logger.info("elastic IP disassociated: its VM's address was released", {
            eip: eip.id,
            instance: eip.instanceId,
            host: eip.host,
          });
        }
        return { value: await release() };
      });
      if (outcome) return outcome.value;
    }
  }

  private eipsOf(vmIds: readonly string[]): Promise<string[]> {
    return this.store.read((view) => vmIds.flatMap((vmId) => view.eipOfInstance(vmId) ?? []).sort());
  }

  private owned(project: ProjectDefinition, id: string): Promise<EipRecord> {
    return this.store.read((view) => ownedEip(view, project, id));
  }

  /** Takes an associated EIP off its host and records it as allocated (caller holds its EIP lock). */
  private async detach(eip: EipRecord, host: string, instanceId: string): Promise<EipRecord> {
    const { instanceId: _i, host: _h, privateIp: _p, associatedAt: _a, ...rest } = eip;
    const updated: EipRecord = { ...rest, state: "allocated" };
    await this.locks.run([`host:${host}`], async () => {
      try {
        await this.hosts.remove(host, eip.publicIp);
      } catch (error) {
        if (!isUnavailable(error)) throw error;
        this.logger.warn("host unreachable: disassociation left to reconciliation", { host, eip: eip.id });
      }
      await this.store.write((view) => {
        view.putEip(updated);
        view.removeInstanceEip(instanceId);
      });
    });
    return updated;
  }

  /**
   * Which VM an instance id (a libvirt name or UUID) stands for: ippool's allocation when it has
   * one (found by vm_id or name), else the UUID libvirt reports, so a name and a UUID of one VM
   * are one instance everywhere (locks, the one-EIP-per-instance rule, the record).
   */
  private async identify(instanceId: string): Promise<{ vmId: string; allocation?: Allocation; host?: string }> {
    const allocation = await this.pools.find(instanceId);
    if (allocation) return { vmId: allocation.vmId, allocation };
    const found = await this.hosts.locate(instanceId);
    if (!found) throw new InstanceNotFoundError(`no configured host has an instance ${instanceId}`);
    const uuid = await this.hosts.instanceUuid(found.host, instanceId);
    return { vmId: uuid ?? instanceId, host: found.host };
  }

  /**
   * Where the instance runs and its private address: ippool's own allocation first, then libvirt.
   * The host it was last seen on (`seenOn`: the allocation's, or where `identify` found it) is asked
   * first; only if it no longer has the instance are all hosts asked again.
   */
  private async place(
    instanceId: string,
    allocation: Allocation | undefined,
    seenOn: string | undefined,
  ): Promise<InstancePlacement> {
    const known = allocation?.host ?? seenOn;
    let host = known !== undefined && this.hosts.has(known) ? known : undefined;
    let state = host === undefined ? null : await this.hosts.instanceState(host, instanceId);
    if (host === undefined || state === null) {
      const found = await this.hosts.locate(instanceId);
      if (!found) throw new InstanceNotFoundError(`no configured host has an instance ${instanceId}`);
      ({ host, state } = found);
    }
    if (state !== "running") throw new InstanceNotRunningError(`${instanceId} on ${host} is ${state}, not running`);
    const privateIp = allocation?.ip ?? (await this.hosts.instanceAddresses(host, instanceId))[0];
    if (privateIp === undefined) {
      throw new InstanceHasNoAddressError(`no private address is known for ${instanceId} (allocate one with ippool)`);
    }
    return { host, privateIp };
  }

  /** Takes back an association applied for an EIP released meanwhile (still under the host lock). */
  private async withdraw(host: string, released: EipRecord): Promise<void> {
    try {
      await this.hosts.remove(host, released.publicIp);
    } catch (error) {
      this.logger.warn("released EIP left on its host; reconciliation will remove it", {
        host,
        eip: released.id,
        error: (error as Error).message,
      });
    }
  }

  private async cleanUpOldHost(host: string, previous: EipRecord): Promise<void> {
    try {
      await this.locks.run([`host:${host}`], () => this.hosts.remove(host, previous.publicIp));
    } catch (error) {
      this.logger.warn("old host not cleaned up after a move; reconciliation will", {
        host,
        eip: previous.id,
        address: formatIpv4(previous.publicIp),
        error: (error as Error).message,
      });
    }
  }
}

function releasedMeanwhile(id: string): EipNotFoundError {
  return new EipNotFoundError(`no elastic IP ${id} (it was released while being associated)`);
}

/** The host cannot be reached: down, or refused for presenting another key than the pinned one. */
function isUnavailable(error: unknown): boolean {
  return error instanceof AppError && (error.code === "HOST_UNAVAILABLE" || error.code === "HOST_KEY_MISMATCH");
}
