/**
 * Which methods a path has, from the app's own routes: a known path asked with another method
 * answers 405 with `Allow`, as the original (axum) did, not the 404 of an unknown route.
 */
export interface RouteEntry {
  readonly method: string;
  readonly path: string;
}

export class AllowedMethods {
  private readonly routes: {
    readonly method: string;
    readonly pattern: RegExp;
    readonly params: number;
    readonly path: string;
  }[];
  /** Paths without parameters and their methods: such a path is never a parameter's value. */
  private readonly fixed = new Map<string, Set<string>>();

  constructor(routes: readonly RouteEntry[]) {
    this.routes = routes
      .filter((route) => route.method !== "ALL" && !route.path.includes("*"))
      .map((route) => ({
        method: route.method.toUpperCase(),
        pattern: templatePattern(route.path),
        params: route.path.split("/").filter((segment) => segment.startsWith(":")).length,
        path: route.path,
      }));
    for (const route of this.routes) {
      if (route.params > 0) continue;
      this.fixed.set(route.path, (this.fixed.get(route.path) ?? new Set<string>()).add(route.method));
    }
  }

  /**
   * The methods a path is served with (GET implies HEAD), sorted; empty for an unknown path. The
   * most specific routes decide, as in the original's router: `/api/v1/ip/allocate` is POST only,
   * though `GET /api/v1/ip/{vm_id}` would match it too.
   */
  of(path: string): string[] {
    const matching = this.routes.filter((route) => route.pattern.test(path));
    const fewest = Math.min(...matching.map((route) => route.params));
    const methods = new Set<string>();
    for (const route of matching) {
      if (route.params !== fewest) continue;
      methods.add(route.method);
      if (route.method === "GET") methods.add("HEAD");
    }
    return [...methods].sort();
  }

  /** Whether `method` on this parameterless path would reach a parameter route instead of the path's own. */
  shadowed(method: string, path: string): boolean {
    const methods = this.fixed.get(path);
    return methods !== undefined && !methods.has(method) && !(method === "HEAD" && methods.has("GET"));
  }
}

/** `/api/v1/ip/:vm_id` → a regex matching one non-empty segment where each `:param` stands. */
function templatePattern(template: string): RegExp {
  const source = template
    .split("/")
    .map((segment) => (segment.startsWith(":") ? "[^/]+" : segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
    .join("/");
  return new RegExp(`^${source}$`);
}
