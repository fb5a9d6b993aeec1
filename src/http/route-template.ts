/**
 * The route a request matched, as registered (`/api/v1/ip/:vm_id`, never the raw path), for
 * per-route metrics with a bounded label set. Elysia hooks record it; the per-listener handler
 * reads it once the response is known. A request no route matched has none.
 */
const templates = new WeakMap<Request, string>();

export function markRoute(request: Request, route: string | undefined): void {
  if (route) templates.set(request, route);
}

export function routeOf(request: Request): string | undefined {
  return templates.get(request);
}
