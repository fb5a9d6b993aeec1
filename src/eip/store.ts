/** The storage the EIP service needs beside the pool store: part of the view a step sees (store/steps.ts). */

export const EIP_STATES = ["allocated", "associated"] as const;
export type EipState = (typeof EIP_STATES)[number];

export interface EipRecord {
  readonly id: string;
  readonly project: string;
  /** The public pool's configured name (not its store key). */
  readonly pool: string;
  readonly publicIp: number;
  readonly state: EipState;
  readonly createdAt: number;
  readonly idempotencyKey?: string;
  readonly instanceId?: string;
  readonly host?: string;
  readonly privateIp?: number;
  readonly associatedAt?: number;
}

export interface IdempotencyRecord {
  readonly id: string;
  readonly pool: string;
}

export interface EipStore {
  getEip(id: string): EipRecord | undefined;
  putEip(record: EipRecord): void;
  removeEip(record: EipRecord): void;
  eipIdsOfProject(project: string): Iterable<string>;
  countEipsOfProject(project: string): number;
  /** Every EIP of every project (reconciliation works host by host over all of them). */
  allEips(): Iterable<EipRecord>;
  /** How many EIPs of that pool and project are in that state (an index count: no records are read). */
  countEips(pool: string, project: string, state: EipState): number;
  eipOfInstance(instanceId: string): string | undefined;
  putInstanceEip(instanceId: string, id: string): void;
  removeInstanceEip(instanceId: string): void;
  getIdempotency(project: string, key: string): IdempotencyRecord | undefined;
  putIdempotency(project: string, key: string, record: IdempotencyRecord): void;
  removeIdempotency(project: string, key: string): void;
}
