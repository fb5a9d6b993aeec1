/**
 * The full allocation list, streamed: one JSON array written a page at a time, each page read from
 * the service when the client has taken the one before (the stream is pulled). A list of a million
 * allocations is never built in memory, and other requests are served between pages. The first
 * page is read before the answer starts, so a bad `after` or pool still answers its 4xx.
 */
import type { ListPage, PoolService } from "../pool/service.ts";
import { allocationView } from "./views.ts";

/** Allocations per page read from the store: a few milliseconds of work between other requests. */
const PAGE = 200;

export async function streamedList(
  pools: PoolService,
  query: { readonly pool?: string; readonly after?: string },
): Promise<Response> {
  const pageAfter = (after: string | undefined) =>
    pools.list({
      ...(query.pool === undefined ? {} : { pool: query.pool }),
      ...(after === undefined ? {} : { after }),
      limit: PAGE,
    });
  let page: ListPage | null = await pageAfter(query.after);
  let written = 0;
  const encoder = new TextEncoder();
  const stream = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (page === null) return;
      // A page at a time with the event loop in between: the server pulls again as soon as the
      // socket takes a chunk, which on a fast client would otherwise keep others waiting.
      await new Promise((resolve) => setImmediate(resolve));
      let text = written === 0 ? "[" : "";
      for (const allocation of page.items) {
        const view = allocationView(allocation, pools.layout(allocation.pool));
        text += `${written === 0 ? "" : ","}${JSON.stringify(view)}`;
        written++;
      }
      const { next } = page;
      page = next === undefined ? null : await pageAfter(next);
      if (page === null) text += "]";
      controller.enqueue(encoder.encode(text));
      if (page === null) controller.close();
    },
  });
  return new Response(stream, { headers: { "content-type": "application/json;charset=utf-8" } });
}
