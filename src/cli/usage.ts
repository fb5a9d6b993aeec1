/** Help text and the usage error (exit code 2). */
import { AppError } from "../errors.ts";

export class UsageError extends AppError {
  readonly status = 400;
  readonly code = "USAGE";
}

export const HELP = `ippool — IP address pools for KVM/libvirt hypervisor hosts

Usage:
  ippool [serve] [OPTIONS]      run the daemon (the default)
  ippool fsck [OPTIONS]         check a data directory's pools and elastic IPs against their records (read-only)
  ippool backup DEST [OPTIONS]  copy the data directory's store into the new or empty directory DEST,
                                consistently, beside a running daemon or not
  ippool db migrate --database-url URL   bring a fleet's PostgreSQL database to this binary's
                                schema (env IPPOOL_DATABASE_URL); refused if the database is newer
  ippool db import DATA_DIR --database-url URL   copy a stopped daemon's LMDB store into the
                                fleet's database, empty and migrated; compared after
  ippool COMMAND [ARGS] [CLIENT OPTIONS]   talk to a running daemon
  ippool completion bash        print a bash completion script
  ippool --version

Client commands:
  allocate VM_ID [--pool P] [--ip A] [--hostname H] [--host HV]
  release VM_ID [--pool P]      release-ip IP        show VM_ID [--pool P]
  list [--pool P]               stats [--pool P]     pools     health
  gc [--dry-run] [--pool P]     release allocations whose VM no configured host has
  eip allocate [--pool P] [--idempotency-key K]      eip list [--state S] [--instance I]
  eip show ID                   eip associate ID INSTANCE [--allow-reassociation]
  eip disassociate ID           eip release ID

Client options:
      --socket <PATH>        the daemon's Unix socket (default /run/ippool/ippool.sock, else
                             data/ippool.sock; env IPPOOL_SOCKET)
      --url <URL>            reach the daemon over TCP instead (env IPPOOL_URL)
      --api-key <KEY>        the project's API key (env IPPOOL_API_KEY)
      --project <NAME>       on the socket: act for this project (env IPPOOL_PROJECT)
      --json                 print the daemon's JSON answer
  Exit codes: 0 ok, 1 refused (the error code is printed), 2 usage, 3 daemon unreachable.

Daemon options:
  -c, --config <PATH>        TOML configuration file (default: env IPPOOL_CONFIG, else the
                             embedded default)
  -p, --port <PORT>          TCP port; the host stays that of server.listen (default 127.0.0.1)
      --listen <HOST:PORT>   TCP listener; "" turns TCP off
  -n, --network <A.B.C>      replace the pools with one /24 pool A.B.C.0/24 named "default"
  -g, --gateway <IP>         gateway of that pool (default A.B.C.1), or of the first configured pool
      --socket <PATH>        Unix socket; "" turns it off
      --data-dir <PATH>      where the LMDB store lives
      --log-format <FMT>     text (default) or json
  -d, --debug                debug logging (also env RUST_LOG=debug, as in the original)
  -h, --help                 print this help
`;
