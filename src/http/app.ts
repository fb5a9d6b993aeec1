/**
 * The Elysia application, shared by the TCP and Unix-socket listeners, and the fetch handler
 * around it that enforces the body limit before routing, logs one line per request and reports
 * each request's route template, status and duration.
 */
import { openapi } from "@elysiajs/openapi";
import { Elysia } from "elysia";
import type { AdminGate } from "../auth/admin.ts";
import type { ProjectDirectory } from "../auth/projects.ts";
import type { EipAssociations } from "../eip/association.ts";
import type { EipService } from "../eip/service.ts";
import type { Logger } from "../log/logger.ts";
import type { LeakDetector } from "../pool/leaks.ts";
import type { PoolService } from "../pool/service.ts";
import type { FetchHandler } from "../runtime/index.ts";
import { VERSION } from "../version.ts";
import { declaredTooLarge, MAX_BODY_BYTES, readJsonBody } from "./body.ts";
import { eipRoutes } from "./eip-routes.ts";
import { errorResponse, toErrorResponse } from "./errors.ts";
import { leakRoutes } from "./leak-routes.ts";
import { AllowedMethods } from "./methods.ts";
import { type Exposition, metricsRoutes } from "./metrics-routes.ts";
import { poolRoutes } from "./pool-routes.ts";
import { markRoute, routeOf } from "./route-template.ts";
import { markTransport } from "./transport.ts";

export interface Services {
  readonly pools: PoolService;
  readonly eips: EipService;
  readonly associations: EipAssociations;
  readonly projects: ProjectDirectory;
  /** The pool API's admin key check on a TCP listener that is not loopback (README, "Who may call the pool API"). */
  readonly adminGate: AdminGate;
  /** Served at `/api/v1/leaks`. */
  readonly leaks: LeakDetector;
  /** Served at `GET /metrics`. */
  readonly metrics: Exposition;
}

/** Told about every request once its response is ready (metrics). */
export interface RequestObserver {
  /** `route` is the matched route template, or undefined when no route matched. */
  request(method: string, route: string | undefined, status: number, seconds: number): void;
}

export function createApp(services: Services, logger: Logger) {
  return (
    // normalize off: Elysia no longer strips undeclared fields from bodies and answers before
    // checking them (a cost on every request). Handlers read only the fields they declare, views
    // build exactly the declared fields, and an interface object with a field it does not declare
    // is refused (422) instead of being trimmed to fit.
    new Elysia({ normalize: false })
      .onParse(({ request }) => readJsonBody(request))
      // The matched route template, for metrics: transform runs for every matched route, error for
      // those that failed before it (body parsing); an unmatched request reaches neither with a route.
      .onTransform(({ request, route }) => markRoute(request, route))
      .onError(({ code, error, request, route }) => {
        markRoute(request, route);
        return toErrorResponse(code, error, (bug) =>
          logger.error("unhandled error", { error: String((bug as Error)?.stack ?? bug) }),
        );
      })
      .use(
        openapi({
          path: "/openapi",
          specPath: "/openapi.json",
          provider: null,
          documentation: {
            info: { title: "ippool", version: VERSION, description: "IP address pools and elastic IPs for KVM hosts" },
            components: {
              securitySchemes: {
                apiKey: { type: "apiKey", in: "header", name: "X-API-Key" },
                adminProject: {
                  type: "apiKey",
                  in: "header",
                  name: "X-Project",
                  description: "on the Unix socket only: the administrator names the project",
                },
              },
            },
          },
        }),
      )
      .use(poolRoutes(services.pools, services.adminGate))
      .use(leakRoutes(services.leaks, services.pools, services.adminGate))
      .use(eipRoutes(services.eips, services.associations, services.projects))
      .use(metricsRoutes(services.metrics))
  );
}

/** Wraps the app for one listener: refuse oversized bodies unread, time and log every request. */
export function createHandler(
  app: ReturnType<typeof createApp>,
  logger: Logger,
  via: "tcp" | "unix",
  observer?: RequestObserver,
): FetchHandler {
  const handle = app.fetch;
  const allowed = new AllowedMethods(app.routes);
  return async (received) => {
    const started = performance.now();
    const url = received.url;
    const start = pathStart(url);
    const request = routable(received, url, start);
    markTransport(request, via);
    const target = start < 0 ? "/" : url.slice(start);
    const query = target.indexOf("?");
    const path = query < 0 ? target : target.slice(0, query);
    const response = declaredTooLarge(request)
      ? errorResponse(
          413,
          { error: `request body is larger than ${MAX_BODY_BYTES} bytes`, code: "PAYLOAD_TOO_LARGE" },
          { connection: "close" },
        )
      : allowed.shadowed(request.method, path)
        ? methodNotAllowed(request.method, path, allowed.of(path))
        : withMethodNotAllowed(await handle(request), request, path, allowed);
    const ms = performance.now() - started;
    observer?.request(request.method, routeOf(request), response.status, ms / 1000);
    if (logger.enabled("info")) logRequest(logger, request, target, response, ms, via);
    return response;
  };
}

/**
 * Elysia looks for the path from index 11 of the URL ("http://" plus a host of 4 characters or
 * more); a shorter host, as in `curl --unix-socket S http://x/...` or `Host: a`, would lose the
 * path, and an HTTP/1.0 request without a Host header (HAProxy's default health check) reaches
 * the handler as a bare path. Such requests get a plain host.
 */
function routable(request: Request, url: string, start: number): Request {
  if (start >= 11 || start < 0) return request;
  return new Request(`http://localhost${url.slice(start)}`, request);
}

/** Where the path begins in a request URL: after scheme and host, or at 0 for a bare path; -1 for none. */
function pathStart(url: string): number {
  return url.startsWith("/") ? 0 : url.indexOf("/", url.indexOf("//") + 2);
}

/** An unknown route whose path another method serves: 405 with `Allow` instead of 404. */
function withMethodNotAllowed(response: Response, request: Request, path: string, allowed: AllowedMethods): Response {
  if (response.status !== 404 || routeOf(request) !== undefined) return response;
  const methods = allowed.of(path);
  return methods.length === 0 ? response : methodNotAllowed(request.method, path, methods);
}

function methodNotAllowed(method: string, path: string, methods: readonly string[]): Response {
  return errorResponse(
    405,
    { error: `${method} is not allowed on ${path} (allowed: ${methods.join(", ")})`, code: "METHOD_NOT_ALLOWED" },
    { allow: methods.join(",") },
  );
}

function logRequest(
  logger: Logger,
  request: Request,
  target: string,
  response: Response,
  ms: number,
  via: string,
): void {
  const rounded = Math.round(ms * 100) / 100;
  if (!logger.enabled("debug")) {
    logger.request(request.method, target, response.status, rounded);
    return;
  }
  logger.info("request", {
    method: request.method,
    path: target,
    status: response.status,
    ms: rounded,
    via,
    bytes_in: request.headers.get("content-length") ?? undefined,
    agent: request.headers.get("user-agent") ?? undefined,
  });
}
