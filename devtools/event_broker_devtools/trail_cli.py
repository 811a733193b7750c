"""``make audit-export`` / ``make audit-verify``: export, chain and verify audit trails from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import event_broker_rollout.airflow.runtime  # noqa: F401  (Airflow as the orchestrator: the signing key's connection)
from event_broker_rollout import paths
from event_broker_rollout.airflow.rest import AirflowApi, AirflowApiError
from event_broker_rollout.config.environment import load_environment
from event_broker_rollout.evidence.trail import (
    PUBLIC_KEY_ENV,
    SIGNING_CONN_ID,
    ChainError,
    SigningKeyError,
    compare_with_topic,
    environment_trails,
    export_trail,
    reports_relative,
    signing_key_from_connection,
    signing_key_from_file,
    trusted_public_keys,
    verify_chain,
    verify_trail,
)
from event_broker_rollout.evidence.trail_entries import RunRef
from event_broker_rollout.resources.audit_topic import PublishError, publish_trail, read_audit_topic


def _runs_from(args: argparse.Namespace) -> list[RunRef]:
    if len(args.dag_id) != len(args.run_id):
        raise SystemExit("give --dag-id and --run-id in pairs, one --run-id per --dag-id")
    return [RunRef(d, r) for d, r in zip(args.dag_id, args.run_id, strict=True)]


def export_command(args: argparse.Namespace) -> int:
    runs = _runs_from(args)
    if args.publish and args.publish != args.env:
        raise SystemExit(f"--publish {args.publish}: a trail of {args.env} is published to {args.env} only")
    api = None
    if args.api:
        if not args.user or not args.password_file:
            raise SystemExit("--api needs --user and --password-file")
        api = AirflowApi(args.api, args.user, Path(args.password_file).read_text().strip())
    if args.logs is None and api is None:
        raise SystemExit("give --logs DIR (Airflow's base_log_folder) or --api URL")
    try:
        key = (
            signing_key_from_file(Path(args.signing_key))
            if args.signing_key
            else signing_key_from_connection()
        )
        exported = export_trail(
            runs,
            environment=args.env,
            signing_key=key,
            logs=Path(args.logs) if args.logs else None,
            api=api,
            out=Path(args.out) if args.out else None,
        )
    except (SigningKeyError, ChainError, AirflowApiError) as error:
        print(f"not exported: {error}", file=sys.stderr)
        return 2
    trail = exported.trail
    print(
        f"trail: {exported.path} ({trail.header['records']} records, head {trail.head}, "
        f"previous {trail.previous_head or 'none: the first trail of ' + args.env}, "
        f"signed by {trail.header['signature']['key_id']})"
    )
    for note in exported.notes:
        print(f"note: {note}")
    if args.publish:
        try:
            topic, delivered = publish_trail(trail, load_environment(args.publish))
        except PublishError as error:
            print(f"not published: {error}", file=sys.stderr)
            return 1
        print(f"published {delivered} messages to {topic}")
    return 0


def chain_lines(chain: Sequence[Path], root: Path) -> list[tuple[str, list[str]]]:
    labelled = []
    for trail in chain:
        inside = trail.resolve().is_relative_to(root.resolve())
        labelled.append(
            (reports_relative(trail, root) if inside else str(trail), trail.read_text().splitlines())
        )
    return labelled


def verify_command(args: argparse.Namespace) -> int:
    """The trail, the chain of trails before it, and (``--cluster``) the audit topic's copies; the first
    break is named. Exit 0: intact; 1: a break; 2: not checkable (no key, topic not readable)."""
    root = Path(args.reports) if args.reports else paths.reports_dir()
    try:
        keys = trusted_public_keys([Path(name) for name in args.public_key])
    except SigningKeyError as error:
        print(f"not verified: {error}", file=sys.stderr)
        return 2
    if args.trail:
        path = Path(args.trail)
    elif args.env:
        trails = environment_trails(root, args.env)
        if not trails:
            print(f"not verified: no signed trail of {args.env} under {root}", file=sys.stderr)
            return 2
        path = trails[-1][0]
    else:
        raise SystemExit("give a trail file, or --env ENV for the environment's newest trail")
    result = verify_trail(path, keys)
    print(result.summary())
    if not result.intact:
        return 1
    chain = verify_chain(path, keys, root)
    print(chain.summary())
    if not chain.intact:
        return 1
    if args.cluster:
        try:
            topic, messages = read_audit_topic(load_environment(args.cluster))
        except (PublishError, OSError, ValueError) as error:
            print(f"audit topic not compared: {error}", file=sys.stderr)
            return 2
        newest = environment_trails(root, str(chain.environment))
        whole = bool(newest) and newest[-1][0].resolve() == path.resolve()
        comparison = compare_with_topic(
            chain_lines(chain.trails, root), messages, str(chain.environment), topic, whole_chain=whole
        )
        print(comparison.summary())
        if not comparison.agrees:
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m event_broker_rollout.evidence.trail")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export", help="assemble, chain, sign and write the audit trail of one or more runs"
    )
    export.add_argument("--dag-id", action="append", required=True, help="repeat with --run-id for each run")
    export.add_argument("--run-id", action="append", required=True)
    export.add_argument(
        "--env", required=True, help="the environment the runs rolled out (its chain of trails)"
    )
    export.add_argument("--logs", help="Airflow's base_log_folder (task log files)")
    export.add_argument(
        "--api", help="Airflow's base URL, e.g. http://127.0.0.1:8080 (logs unless --logs; and people)"
    )
    export.add_argument("--user", help="Airflow user for --api")
    export.add_argument("--password-file", help="file holding that user's password")
    export.add_argument("--out", help="where to write the trail (default: beside the first run's reports)")
    export.add_argument(
        "--signing-key",
        help=f"Ed25519 private key file (PEM, mode 600); default: the Airflow connection {SIGNING_CONN_ID}",
    )
    export.add_argument(
        "--publish", metavar="ENV", help="publish it to ENV's audit topic (a secured cluster; ENV = --env)"
    )
    export.set_defaults(handler=export_command)
    verify = commands.add_parser(
        "verify",
        help="check a trail, the chain of trails before it and the audit topic; name the first break",
    )
    verify.add_argument("trail", nargs="?", help="a trail file (default: the newest trail of --env)")
    verify.add_argument("--env", help="without a trail file: verify the newest trail of this environment")
    verify.add_argument(
        "--public-key",
        action="append",
        default=[],
        help=f"trusted Ed25519 public key (PEM), repeatable; default: ${PUBLIC_KEY_ENV}, else the lab's",
    )
    verify.add_argument("--reports", help="the reports folder holding the chain (default: the project's)")
    verify.add_argument(
        "--cluster", metavar="ENV", help="also compare the chain with ENV's audit topic (a secured cluster)"
    )
    verify.set_defaults(handler=verify_command)
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
