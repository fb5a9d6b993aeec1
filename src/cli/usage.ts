/** Help text and the usage error (exit code 2). */
import { AppError } from "../errors.ts";

export class UsageError extends AppError {
  readonly status = 400;
  readonly code = "USAGE";
}

export const HELP = `ippool — IP address pools for KVM/libvirt hypervisor hosts

Usage:
  ippool [serve] [OPTIONS]      run the daemon (the default)
  ippool fsck [OPTIONS]         check a data directory's bitmaps against its records (read-only)
  ippool --version

Options:
  -c, --config <PATH>        TOML configuration file (default: the embedded default)
  -p, --port <PORT>          TCP port; the host stays that of server.listen (default 127.0.0.1)
      --listen <HOST:PORT>   TCP listener; "" turns TCP off
  -n, --network <A.B.C>      replace the pools with one /24 pool A.B.C.0/24 named "default"
  -g, --gateway <IP>         gateway of that pool (default A.B.C.1), or of the first configured pool
      --socket <PATH>        Unix socket; "" turns it off
      --data-dir <PATH>      where the LMDB store lives
      --log-format <FMT>     text (default) or json
  -d, --debug                debug logging
  -h, --help                 print this help
`;
