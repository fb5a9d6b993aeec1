/** A database URL naming a Unix socket as libpq does (`?host=/dir`), turned into the driver's options. */
import { expect, test } from "bun:test";
import { connectionTarget } from "../../../src/store/postgres/connect.ts";

test("a URL with a host name, or with no parameters, is used as it is", () => {
  for (const url of [
    "postgres://ippool@db1,db2/ippool?target_session_attrs=primary",
    "postgres://ippool@db1/ippool",
    "postgresql://ippool@db1/ippool?host=db2",
  ]) {
    expect(connectionTarget(url)).toEqual({ url, options: {} });
  }
});

test("a socket directory in host= becomes the driver's host option, with port= as its port", () => {
  expect(connectionTarget("postgresql://ippool@/fleet?host=/run/postgresql&port=5433&sslmode=disable")).toEqual({
    url: "postgresql://ippool@localhost/fleet?sslmode=disable",
    options: { host: "/run/postgresql", port: 5433 },
  });
  expect(connectionTarget("postgresql:///fleet?host=/run/postgresql")).toEqual({
    url: "postgresql://localhost/fleet",
    options: { host: "/run/postgresql" },
  });
  expect(connectionTarget("postgres://ippool@db1:5432/fleet?host=/tmp")).toEqual({
    url: "postgres://ippool@db1:5432/fleet",
    options: { host: "/tmp" },
  });
});
