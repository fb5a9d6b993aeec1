/**
 * Projects and their API keys. Keys are configured as SHA-256 hashes; a presented key is hashed
 * and compared with every project's hash in constant time, so neither a match nor its position
 * shows in the timing.
 */
import type { ProjectDefinition } from "../config/config.ts";
import { UnauthorizedError } from "./errors.ts";
import { keyMatches } from "./keys.ts";

export class ProjectDirectory {
  private hashes: { project: ProjectDefinition; digest: Buffer }[] = [];
  private byName = new Map<string, ProjectDefinition>();

  constructor(projects: readonly ProjectDefinition[]) {
    this.replace(projects);
  }

  /** The projects and keys from now on (a reload): a removed key is refused from the next request. */
  replace(projects: readonly ProjectDefinition[]): void {
    this.hashes = projects.map((project) => ({ project, digest: Buffer.from(project.apiKeySha256, "hex") }));
    this.byName = new Map(projects.map((project) => [project.name, project]));
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  /** The project whose key this is; throws UnauthorizedError otherwise. */
  authenticate(apiKey: string | null | undefined): ProjectDefinition {
    if (!apiKey) throw new UnauthorizedError("missing X-API-Key");
    let found: ProjectDefinition | undefined;
    for (const entry of this.hashes) {
      if (keyMatches(entry.digest, apiKey)) found = entry.project;
    }
    if (!found) throw new UnauthorizedError("invalid X-API-Key");
    return found;
  }

  /** A project named by an administrator (Unix socket); unknown names are refused. */
  named(name: string): ProjectDefinition {
    const project = this.byName.get(name);
    if (!project) throw new UnauthorizedError(`no project named ${JSON.stringify(name)}`);
    return project;
  }
}
