"""`python -m modelmon.stack.compose_secrets` (`make compose-secrets`): the *_env secrets of
modelmon.yaml's receivers, from the environment, into the folder docker-compose.yml mounts at
/etc/alertmanager/secrets (one 0600 file per variable, as `modelmon stack up` writes its own).

The Alertmanager image runs as ``nobody`` (uid 65534): hand it the folder afterwards
(``sudo chown -R 65534 secrets``), or it cannot read the files.
"""
from __future__ import annotations

import argparse
import os
import sys

from modelmon.stack.topology import ALERTMANAGER_SECRETS


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    from modelmon.alerting.alertmanager import write_env_secrets
    from modelmon.config import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="python -m modelmon.stack.compose_secrets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="modelmon.yaml", help="modelmon config (default: %(default)s)")
    parser.add_argument("--dir", default=ALERTMANAGER_SECRETS.source,
                        help="folder to write into (default: %(default)s, next to docker-compose.yml)")
    args = parser.parse_args(argv)
    try:
        written = write_env_secrets(load_config(args.config), args.dir, os.environ if environ is None else environ)
    except ConfigError as e:
        print(f"compose secrets: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"compose secrets: cannot write into {args.dir}: {e.strerror or e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path} (0600)")
    if written:
        print(f"Alertmanager in docker compose runs as nobody: `sudo chown -R 65534 {args.dir}` so that it can "
              "read them")
    else:
        print(f"no *_env secrets in {args.config}: nothing to write")
    return 0


if __name__ == "__main__":
    sys.exit(main())
