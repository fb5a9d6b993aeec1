/**
 * The Elastic IP API (`/elastic-ips`). Every call acts for one project: over TCP the project is
 * the owner of the `X-API-Key`; over the Unix socket an administrator may instead name it with
 * `X-Project`.
 */
import { Type } from "@sinclair/typebox";
import { Elysia } from "elysia";
import type { ProjectDirectory } from "../auth/projects.ts";
import type { ProjectDefinition } from "../config/config.ts";
import type { EipAssociations } from "../eip/association.ts";
import type { EipService } from "../eip/service.ts";
import type { EipRecord } from "../eip/store.ts";
import { formatIpv4 } from "../net/ipv4.ts";
import { AssociateBody, EipAllocateBody, EipListQuery, EipParams, EipView } from "./eip-schemas.ts";
import { type ErrorCode, errorResponses } from "./error-schemas.ts";
import { transportOf } from "./transport.ts";

/** The project is derived before the request is validated: a caller without one learns nothing about it. */
export function eipRoutes(eips: EipService, associations: EipAssociations, projects: ProjectDirectory) {
  return new Elysia({ prefix: "/elastic-ips" })
    .derive(({ request }) => ({ project: projectOf(request, projects) }))
    .post(
      "",
      async ({ body, project, set }) => {
        const { eip, created } = await eips.allocate(project, {
          ...(body?.pool === undefined ? {} : { pool: body.pool }),
          ...(body?.idempotency_key === undefined ? {} : { idempotencyKey: body.idempotency_key }),
        });
        set.status = created ? 201 : 200;
        return eipView(eip);
      },
      {
        body: EipAllocateBody,
        response: {
          200: EipView,
          201: EipView,
          ...eipErrors("POOL_NOT_FOUND", "QUOTA_EXCEEDED", "IDEMPOTENCY_MISMATCH", "POOL_EXHAUSTED", "STORAGE_FULL"),
        },
        detail: API_KEY,
      },
    )
    .get(
      "",
      async ({ query, project }) => {
        const listed = await eips.list(project, {
          ...(query.state === undefined ? {} : { state: query.state }),
          ...(query.instance_id === undefined ? {} : { instanceId: query.instance_id }),
        });
        return listed.map(eipView);
      },
      { query: EipListQuery, response: { 200: Type.Array(EipView), ...eipErrors() }, detail: API_KEY },
    )
    .get("/:id", async ({ params, project }) => eipView(await eips.get(project, params.id)), {
      params: EipParams,
      response: { 200: EipView, ...eipErrors("NOT_FOUND") },
      detail: API_KEY,
    })
    .post(
      "/:id/associate",
      async ({ params, body, project }) =>
        eipView(
          await associations.associate(project, params.id, {
            instanceId: body.instance_id,
            allowReassociation: body.allow_reassociation ?? false,
          }),
        ),
      {
        params: EipParams,
        body: AssociateBody,
        response: {
          200: EipView,
          ...eipErrors(
            "NOT_FOUND",
            "INSTANCE_NOT_FOUND",
            "INSTANCE_NOT_RUNNING",
            "INSTANCE_HAS_EIP",
            "ALREADY_ASSOCIATED",
            "INSTANCE_HAS_NO_ADDRESS",
            "HOST_UNAVAILABLE",
            "HOST_KEY_MISMATCH",
            "HOST_COMMAND_FAILED",
            "STORAGE_FULL",
          ),
        },
        detail: API_KEY,
      },
    )
    .post(
      "/:id/disassociate",
      async ({ params, project }) => eipView(await associations.disassociate(project, params.id)),
      {
        params: EipParams,
        response: {
          200: EipView,
          ...eipErrors(
            "NOT_FOUND",
            "NOT_ASSOCIATED",
            "HOST_UNAVAILABLE",
            "HOST_KEY_MISMATCH",
            "HOST_COMMAND_FAILED",
            "STORAGE_FULL",
          ),
        },
        detail: API_KEY,
      },
    )
    .delete(
      "/:id",
      async ({ params, project }) => ({
        ...eipView(await eips.release(project, params.id)),
        state: "released" as const,
      }),
      {
        params: EipParams,
        response: { 200: EipView, ...eipErrors("NOT_FOUND", "STILL_ASSOCIATED", "STORAGE_FULL") },
        detail: API_KEY,
      },
    );
}

function projectOf(request: Request, projects: ProjectDirectory): ProjectDefinition {
  const apiKey = request.headers.get("x-api-key");
  const named = request.headers.get("x-project");
  if (transportOf(request) === "unix" && apiKey === null && named !== null) return projects.named(named);
  return projects.authenticate(apiKey);
}

/** Every EIP route checks the key (or, on the Unix socket, X-Project). */
const eipErrors = (...codes: ErrorCode[]) => errorResponses("UNAUTHORIZED", ...codes);
const API_KEY = { security: [{ apiKey: [] }, { adminProject: [] }] };

export function eipView(eip: EipRecord): EipView {
  return {
    id: eip.id,
    public_ip: formatIpv4(eip.publicIp),
    project: eip.project,
    pool: eip.pool,
    state: eip.state,
    created_at: new Date(eip.createdAt).toISOString(),
    ...(eip.instanceId === undefined ? {} : { instance_id: eip.instanceId }),
    ...(eip.host === undefined ? {} : { host: eip.host }),
    ...(eip.privateIp === undefined ? {} : { private_ip: formatIpv4(eip.privateIp) }),
    ...(eip.associatedAt === undefined ? {} : { associated_at: new Date(eip.associatedAt).toISOString() }),
  };
}
