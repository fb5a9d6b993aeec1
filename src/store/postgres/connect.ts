import postgres, { type Options, type PostgresType, type Sql } from "postgres";

/** Connections to the database `url` names, as libpq reads it (connectionTarget). */
export function openPostgres(url: string, options: Options<Record<string, PostgresType>>): Sql {
  const target = connectionTarget(url);
  return postgres(target.url, { ...options, ...target.options });
}

/**
 * A database URL as libpq reads it. A Unix socket is named by a directory in the URL's `host`
 * parameter (`postgresql://ippool@/ippool?host=/run/postgresql`), which the driver does not read
 * from a URL: it is taken out of the URL (the driver would send it to the server as a setting)
 * and given as the driver's `host` option, with the URL's `port` parameter, if any, as its `port`
 * (the socket's name carries the port). The URL may then leave its host empty, as libpq allows;
 * the driver needs one there, so `localhost` stands in (the option decides where it connects).
 */
export interface ConnectionTarget {
  readonly url: string;
  /** Spread into the driver's options. */
  readonly options: { host?: string; port?: number };
}

export function connectionTarget(url: string): ConnectionTarget {
  const at = url.indexOf("?");
  const query = new URLSearchParams(at < 0 ? "" : url.slice(at + 1));
  const socketDir = query.get("host");
  if (socketDir === null || !socketDir.startsWith("/")) return { url, options: {} };
  const port = query.get("port");
  query.delete("host");
  query.delete("port");
  const rest = query.toString();
  const base = withHost(url.slice(0, at));
  return {
    url: `${base}${rest === "" ? "" : `?${rest}`}`,
    options: { host: socketDir, ...(port === null ? {} : { port: Number(port) }) },
  };
}

/** `scheme://[user@]/db` with `localhost` as its host where it has none. */
function withHost(base: string): string {
  const start = base.indexOf("://") + 3;
  const end = base.indexOf("/", start);
  const authority = base.slice(start, end < 0 ? undefined : end);
  const user = authority.lastIndexOf("@");
  if (authority.slice(user + 1) !== "") return base;
  return `${base.slice(0, start)}${authority}localhost${end < 0 ? "" : base.slice(end)}`;
}
