"""Command line of the DICOM node: ``serve``, ``status`` and ``cleanup``.

The application's ``python -m app`` adds these with :func:`add_serve_parser` and
:func:`add_status_parser`; ``python -m app.node`` runs them on their own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from .config import CONFIG_ENV, ENV_PREFIX, ConfigError, config_reference, load_config

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
    p.add_argument("--config", "-c", default=os.environ.get(CONFIG_ENV),
                   help=f"YAML configuration file (default ${CONFIG_ENV})")
    p.set_defaults(func=main_serve)
    return p


def add_status_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Add the ``status`` subcommand (runs :func:`main_status`)."""
    p = subparsers.add_parser(
        "status", help="show studies waiting/running/failed and results unsent",
        description="Read the node's spool and heartbeat and print its state: whether the node "
                    "runs and its worker has loaded the models, why and how long each study waits, "
                    "unsent results with their last error, failed studies (not analysable vs "
                    "processing errors).",
        epilog="exit codes: 0 no problem; 1 a problem needs an operator (node not running, "
               "worker cannot load its models, a study waiting or a result unsent beyond the "
               "limits, undeliverable results); 2 the configuration or the spool cannot be read.\n\n"
               + _CONFIG_HELP + config_reference(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", default=os.environ.get(CONFIG_ENV),
                   help=f"YAML configuration file (default ${CONFIG_ENV})")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--liveness", action="store_true",
                   help="count only 'node not running' and 'worker cannot load its models' as problems "
                        "(for a container health check or a restart policy)")
    p.add_argument("--check", action="store_true",
                   help="print one line for a monitor (OK: ... / PROBLEM: ...); same exit codes")
    p.add_argument("--max-wait", type=float, default=3600.0, metavar="S",
                   help="a study queued longer than this is a problem (default 3600)")
    p.add_argument("--max-unsent-age", type=float, default=3600.0, metavar="S",
                   help="a result unsent for longer than this is a problem (default 3600)")
    p.set_defaults(func=main_status)
    return p


def add_cleanup_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    """Add the ``cleanup`` subcommand (runs :func:`main_cleanup`)."""
    p = subparsers.add_parser(
        "cleanup", help="delete processed, sent, undeliverable and quarantined spool entries past retention",
        description="Apply the spool retention (spool.retention_days): remove entries of done/, sent/, "
                    "undeliverable/ and quarantine/ last changed longer ago. Work in progress is never "
                    "touched. Exit 0, or 2 when the configuration or spool cannot be read.")
    p.add_argument("--config", "-c", default=os.environ.get(CONFIG_ENV),
                   help=f"YAML configuration file (default ${CONFIG_ENV})")
    p.add_argument("--older-than-days", type=float, default=None,
                   help="override spool.retention_days for this run")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed")
    p.set_defaults(func=main_cleanup)
    return p


def main_cleanup(args: argparse.Namespace) -> int:
    """Apply the spool retention once; print what was removed."""
    from .cleanup import clean_spool
    from .status import SpoolUnreadable, check_spool

    try:
        config = load_config(args.config)
        check_spool(config.spool_dir)
        days = config.spool.retention_days if args.older_than_days is None else args.older_than_days
        report = clean_spool(config.spool_dir, days, dry_run=args.dry_run)
    except (ConfigError, SpoolUnreadable, ValueError, OSError) as exc:
        print(f"cleanup: {exc}", file=sys.stderr)
        return STATUS_UNREADABLE
    verb = "would remove" if args.dry_run else "removed"
    for name, entries in report.removed.items():
        print(f"{name + '/':<15} {verb} {len(entries)}, kept {report.kept[name]}")
    return STATUS_OK


def main_serve(args: argparse.Namespace) -> int:
    """Run the node until SIGTERM/SIGINT. Returns the exit status."""
    from .logs import setup_logging
    from .service import NodeService

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 1  # a configuration error exits 1, as in the app and training
    setup_logging(config.logging.format, config.logging.level)
    NodeService(config).run_forever()
    return 0


STATUS_OK, STATUS_PROBLEM, STATUS_UNREADABLE = 0, 1, 2


def main_status(args: argparse.Namespace) -> int:
    """Print the node status.

    Returns:
        0 when nothing needs an operator, 1 when ``problems`` is not empty, 2 when
        the configuration or the spool cannot be read.
    """
    from .status import SpoolUnreadable, Thresholds, read_status

    try:
        config = load_config(args.config)
        st = read_status(config.spool_dir, models_dir=config.models_dir,
                         quiet_period_s=config.study.quiet_period_s, min_free_mb=config.spool.min_free_mb,
                         thresholds=Thresholds(max_wait_s=args.max_wait, max_unsent_age_s=args.max_unsent_age))
    except ConfigError as exc:
        print(f"{'UNKNOWN: ' if args.check else ''}configuration error: {exc}", file=sys.stderr)
        return STATUS_UNREADABLE
    except (SpoolUnreadable, OSError) as exc:
        print(f"{'UNKNOWN: ' if args.check else ''}cannot read the spool: {exc}", file=sys.stderr)
        return STATUS_UNREADABLE
    if args.liveness:
        st.problems = list(st.liveness_problems)
    if args.json:
        print(json.dumps(st.as_dict(), indent=1))
    else:
        print(st.check_line() if args.check else st.as_text())
    return STATUS_PROBLEM if st.problems else STATUS_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.node", description="TSC DICOM node")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    add_status_parser(sub)
    add_cleanup_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
