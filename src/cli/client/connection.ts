/**
 * How the command-line client reaches the daemon: its Unix socket by default (the local admin's
 * door; EIP calls name their project with X-Project), or TCP with `--url` and an API key.
 */
import { existsSync } from "node:fs";
import type { Runtime } from "../../runtime/index.ts";
import { DaemonUnreachableError, RequestRefusedError } from "./errors.ts";

export interface Target {
  readonly socket?: string;
  readonly url?: string;
  readonly apiKey?: string;
  readonly project?: string;
}

/** Where to find the daemon when neither --socket nor --url says: the systemd unit's socket, else `make run`'s. */
export function defaultSocket(): string {
  const candidates = ["/run/ippool/ippool.sock", "data/ippool.sock"];
  return candidates.find((path) => existsSync(path)) ?? (candidates[0] as string);
}

export class DaemonClient {
  constructor(
    private readonly runtime: Runtime,
    private readonly target: Target,
  ) {}

  /** The answer's JSON body; throws RequestRefusedError for 4xx/5xx, DaemonUnreachableError when nobody answers. */
  async request(method: string, path: string, body?: unknown): Promise<unknown> {
    return (await this.exchange(method, path, body)).body;
  }

  /**
   * Every item of a paged list (`X-Next-After` names where the next page starts), fetched `pageSize`
   * at a time, so that neither side holds a whole large list in one answer.
   */
  async requestAll(path: string, pageSize: number): Promise<unknown[]> {
    const items: unknown[] = [];
    const separator = path.includes("?") ? "&" : "?";
    let after: string | null = null;
    do {
      const page = `${path}${separator}limit=${pageSize}${after === null ? "" : `&after=${encodeURIComponent(after)}`}`;
      const { body, headers } = await this.exchange("GET", page);
      items.push(...(body as unknown[]));
      after = headers.get("x-next-after");
    } while (after !== null);
    return items;
  }

  private async exchange(method: string, path: string, body?: unknown): Promise<{ body: unknown; headers: Headers }> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.target.apiKey) headers["x-api-key"] = this.target.apiKey;
    else if (this.target.project) headers["x-project"] = this.target.project;
    const init: RequestInit = { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) };
    let response: Response;
    try {
      response = this.target.url
        ? await fetch(`${this.target.url.replace(/\/+$/, "")}${path}`, init)
        : await this.runtime.fetchUnix(this.socket(), `http://localhost${path}`, init);
    } catch (error) {
      throw new DaemonUnreachableError(`cannot reach the daemon at ${this.where()}: ${(error as Error).message}`);
    }
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text === "" ? undefined : JSON.parse(text);
    } catch {
      throw new RequestRefusedError(
        `unexpected answer (${response.status}): ${text.slice(0, 200)}`,
        response.status,
        "BAD_ANSWER",
      );
    }
    if (!response.ok) {
      const { error, code } = (parsed ?? {}) as { error?: string; code?: string };
      throw new RequestRefusedError(
        error ?? `HTTP ${response.status}`,
        response.status,
        code ?? `HTTP_${response.status}`,
      );
    }
    return { body: parsed, headers: response.headers };
  }

  private socket(): string {
    return this.target.socket ?? defaultSocket();
  }

  private where(): string {
    return this.target.url ?? this.socket();
  }
}
