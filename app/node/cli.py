"""Command line of the DICOM node: ``serve`` and ``status``.

The application's ``python -m app`` adds these with :func:`add_serve_parser` and
:func:`add_status_parser`; ``python -m app.node`` runs them on their own.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from .config import ENV_PREFIX, ConfigError, config_reference, load_config

_CONFIG_HELP = f"""configuration:
  A YAML file with sections scp, spool, study, worker, outbox, logging.
  Any setting can be overridden by an environment variable
  {ENV_PREFIX}<SECTION>__<KEY> (lists comma separated, destinations AE@host:port).
  Settings, defaults and their environment variables:
"""


def add_serve_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand (runs :func:`main_serve`)."""
    p = subparsers.add_parser(
        "serve", help="run the DICOM node (C-STORE SCP, spool, worker, outbox)",
        description="Receive studies over DICOM, process each complete study once, "
                    "send the results back.",
        epilog=_CONFIG_HELP + config_reference() + "\n\nSee docs/dicom-node.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", help="YAML configuration file")
    p.set_defaults(func=main_serve)
    return p


def add_status_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Add the ``status`` subcommand (runs :func:`main_status`)."""
    p = subparsers.add_parser(
        "status", help="show studies waiting/running/failed and results unsent",
        description="Read the node's spool and print its state.",
        epilog=_CONFIG_HELP + config_reference(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", help="YAML configuration file (for spool.dir)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=main_status)
    return p


def main_serve(args: argparse.Namespace) -> int:
    """Run the node until SIGTERM/SIGINT. Returns the exit status."""
    from .logs import setup_logging
    from .service import NodeService

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.logging.format, config.logging.level)
    NodeService(config).run_forever()
    return 0


def main_status(args: argparse.Namespace) -> int:
    """Print the node status. Returns 0, or 1 when studies failed or results are undeliverable."""
    from .status import read_status

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    st = read_status(config.spool_dir)
    print(json.dumps(st.as_dict(), indent=1) if args.json else st.as_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.node", description="TSC DICOM node")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    add_status_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
