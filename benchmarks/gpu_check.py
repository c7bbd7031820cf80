"""The ``paper`` profile on one CUDA GPU: a time-boxed slice, measured, and a projection of the whole.

For each task and input of the paper profile (the autoencoder on MNIST; the convnet at
the profile's width on MNIST-sized 1x28x28 and on CIFAR-sized 3x32x32 inputs) it trains
with the library's own loop (:func:`ntaylor_lib.runs.training.train`) and measures:

- seconds per epoch with no recorders (``bare``), with the exploration runs' recorders
  (``explore``: activation configurations and signed gradients), with the Taylor
  recorders alone (``taylor``: :func:`ntaylor_lib.paper.experiments.taylor_recorders`, what
  the recorder-overhead target is about) and with every recorder of a standard run (``all``:
  :func:`ntaylor_lib.paper.experiments.standard_recorders`); ``all / bare`` is the recorder
  overhead of a standard run, ``taylor / bare`` that of the Taylor recorders;
- seconds to solve the Taylor optima of one horizon (what ``on_train_end`` solves for
  each epoch end), group by group so that the time box is checked between groups, the
  neurons from the first few of each neuron group (``--solve-neurons``), scaled;
- peak GPU memory (``torch.cuda.max_memory_allocated``) and the recorders' state;

then projects the wall time of every run the book trains at the profile (benchmarks/README.md
gives the formula). Each epoch time comes from
slices of ``R`` and ``2R`` rounds (a straight-line fit: fixed cost per epoch plus cost
per round, scaled to the epoch's rounds), replaced by a measured full epoch where the
time box leaves room; warm-up rounds are excluded, CUDA is synchronised around every
timing. The report is printed and written as JSON to ``$OUT/gpu_check.json`` when
``$OUT`` is set, else ``results/gpu_check.json``.

Needs torch and numpy (SciPy for the solver timings, which are skipped without it;
tqdm optional) and the bundle of ``python -m ntaylor_lib data --gpu-bundle``; never the
book's packages nor torchvision. Run it through ``benchmarks/gpu_check.sh``:

    bash benchmarks/gpu_check.sh                               # CUDA, paper profile, 420 s box
    .venv/bin/python benchmarks/gpu_check.py --device cpu --tiny   # seconds, on a CPU (tests)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from timing import seconds as timed
from timing import sync

REPO = Path(__file__).resolve().parent.parent
CASES = (("autoencoder", "mnist"), ("convnet", "mnist"), ("convnet", "cifar10"))
VARIANTS = ("bare", "explore", "taylor", "all")
INPUTS = {"autoencoder": "MNIST 784", "mnist": "MNIST-sized 1x28x28", "cifar10": "CIFAR-sized 3x32x32"}
# --tiny: the paper profile shrunk until the whole check takes seconds on a CPU (tests).
TINY = {
    "train_size": 1280, "eval_size": 64, "probe_size": 32, "convnet_width": 4,
    "taylor_neurons": 2, "taylor_input_neurons": 1, "taylor_conv_neurons": 2,
    "taylor_round_stride": 4, "taylor_input_stride": 4, "sign_round_stride": 4, "taylor_samples": 8,
    "taylor_box_scales": "inf", "taylor_box_scales_ce": "1", "taylor_ce_tol": 1e-6,
    "taylor_replay_stride": 4, "taylor_replay_samples": 8, "taylor_replay_iter": 50,
}


def preflight() -> dict[str, str | None]:
    """Versions of the optional packages the check can use (``None``: missing)."""
    found: dict[str, str | None] = {}
    for name in ("numpy", "scipy", "tqdm"):
        try:
            found[name] = getattr(importlib.import_module(name), "__version__", "present")
        except ImportError:
            found[name] = None
    return found


class TimeBox:
    """Seconds left of the check's budget."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def case_arrays(dataset: str, bundle: Path, params: Mapping[str, Any],
                seed: int) -> tuple[dict[str, torch.Tensor], str]:
    """The arrays of ``dataset`` from the bundle, or random CIFAR-sized ones; and where they came from."""
    from ntaylor_lib.runs.data import MissingDataError, load_gpu_bundle

    arrays = load_gpu_bundle(dataset, bundle)
    if arrays is not None:
        return arrays, f"{dataset} from {bundle}"
    if dataset != "cifar10":
        raise MissingDataError(
            f"no {dataset}.pt.gz under {bundle}: run `python -m ntaylor_lib data --gpu-bundle` on a machine "
            f"with the data, and carry data/gpu_check to this one (or pass --bundle DIR)"
        )
    n_train = int(params["train_size"]) or 50000
    n_test = min(int(params["eval_size"]), 10000)
    gen = torch.Generator().manual_seed(seed)
    arrays = {
        "train_x": torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=gen),
        "train_y": torch.randint(0, 10, (n_train,), generator=gen),
        "test_x": torch.randint(0, 256, (n_test, 3, 32, 32), dtype=torch.uint8, generator=gen),
        "test_y": torch.randint(0, 10, (n_test,), generator=gen),
    }
    return arrays, ("random CIFAR-sized inputs and labels "
                    "(CIFAR-10 is not in the bundle; timings do not depend on pixel values)")


def make_recorders(variant: str, task: str, params: Mapping[str, Any]) -> list:
    """The recorders of a variant; the Taylor recorders' end-of-training solve is left to :func:`solve_seconds`."""
    from ntaylor_lib.paper.experiments import standard_recorders, taylor_recorders
    from ntaylor_lib.taylor.recorders import TaylorRecorder

    if variant == "bare":
        return []
    if variant == "taylor":
        recorders = taylor_recorders(task, params)
    else:
        recorders = standard_recorders(task, params, taylor=variant == "all")
    for rec in recorders:
        if isinstance(rec, TaylorRecorder):
            rec.solve_at_end = False
    return recorders


def sliced(data, rounds: int, batch: int):
    """``data`` with its training set cut to ``rounds`` full minibatches (evaluation sets unchanged)."""
    n = rounds * batch
    return dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])


def epoch_seconds(config, recorders: list, data) -> float:
    """Seconds of one epoch of ``train`` (rounds, evaluation, recorders' epoch end), CUDA synchronised."""
    from ntaylor_lib.runs.training import train

    sync(config.device)
    result = train(config, recorders, data=data, progress=False)
    sync(config.device)
    return float(result.history.epoch_time[0])


def state_bytes(obj: Any) -> dict[str, int]:
    """Bytes of the tensors and arrays in a (nested) recorder state, by device type."""
    out: dict[str, int] = {}

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            out[x.device.type] = out.get(x.device.type, 0) + x.numel() * x.element_size()
        elif hasattr(x, "nbytes") and hasattr(x, "dtype"):  # a numpy array
            out["cpu"] = out.get("cpu", 0) + int(x.nbytes)
        elif isinstance(x, Mapping):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(obj)
    return out


def epoch_state(recorders: Sequence, r_full: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """The recorders' state after the measured rounds, scaled to one epoch, by device type.

    What a recorder keeps per recorded round (the cross-entropy factors, replay snapshots:
    recorders with ``stride`` and ``recorded``) is scaled by the epoch's recorded rounds over
    those measured; the other states (fixed-size statistics, epoch-end snapshots, small
    per-stride records) are taken as measured.
    """
    per_epoch: dict[str, int] = {}
    detail = []
    for rec in recorders:
        measured = state_bytes(rec.state_dict())
        scale = 1.0
        if getattr(rec, "recorded", None) and getattr(rec, "stride", 0):
            scale = math.ceil(r_full / int(rec.stride)) / len(rec.recorded)
        for device, n in measured.items():
            per_epoch[device] = per_epoch.get(device, 0) + int(n * scale)
        detail.append({"recorder": rec.name, "measured_bytes": measured, "scale_to_epoch": scale})
    return {"per_epoch": per_epoch, "detail": detail}


def solve_seconds(recorders: Sequence, device: str, box: TimeBox, neurons: int = 0) -> dict[str, Any]:
    """Seconds to solve one horizon's Taylor optima: every scale and box of every Taylor recorder.

    Each group is solved alone (:meth:`TaylorRecorder.for_group`, then its ``solve``),
    so the time box is checked between groups; a group left unsolved when it runs out is
    estimated from the solved groups' mean seconds per scale (``groups_estimated`` says how
    many). A group's neurons are separate problems, solved one after another: of each
    neuron group only the first ``neurons`` (0: all) are solved and the time scaled by
    ``scales / solved``: the box is checked only between groups, and a whole group can be
    long (on the H200 machine, before the box solver held unseen weights out, one group of 50
    autoencoder input-layer neurons outran the whole box). Should a group's solve fail, the
    recorder's whole solve is timed instead.
    """
    from ntaylor_lib.taylor.recorders import TaylorRecorder

    groups, total, estimated, unknown = [], 0.0, 0, False
    for rec in recorders:
        if not isinstance(rec, TaylorRecorder):
            continue
        rows = []
        try:
            for i, group in enumerate(rec.groups):
                scales = 1 if group.joint else len(group.neurons)
                solved = min(neurons, scales) if neurons else scales
                seconds = timed(rec.for_group(i, solved).solve, device) if box.left() > 0 else None
                rows.append({"recorder": rec.name, "layer": group.layer, "joint": group.joint, "scales": scales,
                             "solved": solved, "boxes": len(rec.box_scales), "seconds_solved": seconds,
                             "seconds": None if seconds is None else seconds * scales / solved})
        except (IndexError, KeyError, RuntimeError, TypeError, ValueError) as error:  # time it whole
            rows = [{"recorder": rec.name, "layer": None, "joint": None, "scales": None, "boxes": len(rec.box_scales),
                     "seconds": timed(rec.solve, device) if box.left() > 0 else None,
                     "note": f"timed whole ({type(error).__name__}: {error})"}]
        solved = [r for r in rows if r["seconds"] is not None]
        groups += rows
        if not solved:  # the box ran out before this recorder: its solve is unknown
            unknown = True
            continue
        per_scale = sum(r["seconds"] for r in solved) / max(sum(r["scales"] or 1 for r in solved), 1)
        for r in rows:
            if r["seconds"] is None:
                r["seconds_estimated"] = per_scale * r["scales"]
                estimated += 1
            total += r["seconds"] if r["seconds"] is not None else r["seconds_estimated"]
    per_round = [r for r in recorders if isinstance(r, TaylorRecorder) and hasattr(r, "recorded")]
    return {
        "seconds": None if unknown or not groups else total,
        "groups_estimated": estimated,
        "groups": groups,
        # the device path (batched float64 eigh and objectives on the GPU) when the run is on CUDA
        "solved_on": sorted({r._solve_target(None)[0].type for r in recorders if isinstance(r, TaylorRecorder)}),
        "growth": "linear" if per_round else "constant",
        "recorded_rounds": len(per_round[0].recorded) if per_round else 0,
        "stride": int(getattr(per_round[0], "stride", 1)) if per_round else 1,
    }


def fit_epoch(r_a: int, t_a: float, r_b: int, t_b: float, r_full: int) -> dict[str, float]:
    """Straight line through ``(R, t)`` of two slices: fixed seconds per epoch plus seconds per round."""
    per_round = (t_b - t_a) / (r_b - r_a)
    if per_round <= 0:  # noise larger than the slices' difference: all cost per round
        per_round = t_b / r_b
    fixed = max(t_a - per_round * r_a, 0.0)
    return {"per_round_s": per_round, "fixed_s": fixed, "epoch_s": fixed + per_round * r_full}


def measure_slices(task: str, dataset: str, params: Mapping[str, Any], arrays, args, box: TimeBox) -> dict[str, Any]:
    """Warm-up, then slices of ``R`` and ``2R`` rounds for every variant; solve timed on the larger slice."""
    from ntaylor_lib.runs.config import run_config
    from ntaylor_lib.runs.data import task_data_from_arrays

    opt = args.optimizer
    config = run_config(params, task, opt, lr=float(params[f"lr_{task}_{opt}"]), check_data=False)
    config = dataclasses.replace(config, dataset=dataset, epochs=1)
    data = task_data_from_arrays(arrays, task, dataset, config.train_size, config.eval_size, config.probe_size,
                                 config.device)
    r_full = data.train_x.shape[0] // config.batch_size
    stride = max(int(params["taylor_round_stride"]), int(params["sign_round_stride"]),
                 int(params["taylor_input_stride"]))
    r_a = max(1, min(args.rounds or stride, r_full // 2))
    r_b = min(2 * r_a, r_full)
    if config.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for variant in VARIANTS:  # warm-up (kernels, allocator, cuDNN's choices): not timed
        epoch_seconds(config, make_recorders(variant, task, params), sliced(data, min(2, r_a), config.batch_size))
    fits, slices, solve, state = {}, {}, None, {}
    for variant in VARIANTS:
        times = []
        for rounds in (r_a, r_b):
            recorders = make_recorders(variant, task, params)
            times.append(epoch_seconds(config, recorders, sliced(data, rounds, config.batch_size)))
        slices[variant] = {"rounds": [r_a, r_b], "seconds": times}
        fits[variant] = fit_epoch(r_a, times[0], r_b, times[1], r_full)
        if variant == "all":
            state = epoch_state(recorders, r_full, params)
            if args.solve:
                solve = solve_seconds(recorders, config.device, box, args.solve_neurons)
    return {"config": config, "data": data, "r_full": r_full, "r_b": r_b, "fits": fits, "slices": slices,
            "solve": solve, "state": state, "peak": _peak(config.device)}


def _peak(device: str) -> int | None:
    return int(torch.cuda.max_memory_allocated()) if device == "cuda" else None


def measure_full(task: str, params: Mapping[str, Any], first: dict[str, Any], args, box: TimeBox) -> dict[str, Any]:
    """A whole epoch of ``bare`` and ``all`` (then ``taylor`` and ``explore``), and the solve of its horizon."""
    config, data = first["config"], first["data"]
    if config.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out: dict[str, Any] = {"epoch_s": {}}
    for variant in ("bare", "all", "taylor", "explore"):
        recorders = make_recorders(variant, task, params)
        out["epoch_s"][variant] = epoch_seconds(config, recorders, data)
        if variant == "all":
            out["state"] = epoch_state(recorders, first["r_full"], params)
            out["solve"] = solve_seconds(recorders, config.device, box, args.solve_neurons) if args.solve else None
        if box.left() <= 0:
            break
    out["peak"] = _peak(config.device)
    return out


def tuning_runs(params: Mapping[str, Any]) -> dict[str, int]:
    """Tuning runs per task (``tuning_rates_<optimizer>`` keys; none where the profile has no tuning)."""
    from ntaylor_lib.runs.profiles import OPTIMIZERS

    counts = {}
    for opt in OPTIMIZERS:
        key = f"tuning_rates_{opt}"
        if key in params:
            counts[opt] = len(params[key])
    return counts


def projection(params: Mapping[str, Any], cases: Mapping[str, dict[str, Any]], convnet_input: str) -> dict[str, Any]:
    """Wall time of every run the book trains at the profile, from the per-epoch and per-horizon measurements."""
    from ntaylor_lib.paper.experiments import MAIN_OPTIMIZERS
    from ntaylor_lib.taylor.recorders.base import horizon_epochs

    epochs = int(params["epochs"])
    schedule = horizon_epochs(params["taylor_horizons"], epochs)
    n_main, n_expl = len(MAIN_OPTIMIZERS), len(params["exploration_sgd_rates"])
    tuning = tuning_runs(params)
    tuning_epochs = int(params.get("tuning_epochs", 0))
    per_task, total, complete = {}, 0.0, True
    for task, key in (("autoencoder", "autoencoder/mnist"), ("convnet", f"convnet/{convnet_input}")):
        case = cases[key]
        t = case["epoch_s"]
        s1 = case["solve_s_per_horizon"]
        # in first-horizon solves: an MSE horizon costs the same as the first, a cross-entropy
        # horizon at epoch e solves over e epochs of recorded samples
        horizons = len(schedule) if case["solve_growth"] == "constant" else sum(schedule)
        solve = None if s1 is None else s1 * horizons
        complete &= solve is not None
        share = 1.0
        if tuning and int(params.get("tuning_train_size", 0)):
            share = min(1.0, int(params["tuning_train_size"]) / case["train_samples"])
        tune = sum(tuning.values()) * tuning_epochs * t["bare"] * share
        seconds = n_main * (epochs * t["all"] + (solve or 0.0)) + n_expl * epochs * t["explore"] + tune
        per_task[task] = {
            "input": key, "main_runs": n_main, "exploration_runs": n_expl, "tuning_runs": sum(tuning.values()),
            "training_s": n_main * epochs * t["all"] + n_expl * epochs * t["explore"],
            "solve_s": None if solve is None else n_main * solve,
            "tuning_s": tune, "seconds": seconds,
        }
        total += seconds
    formula = (
        "T = sum over tasks of [ n_main * (E * t_all + S) + n_explore * E * t_explore "
        "+ n_tune * E_tune * t_bare * f_tune ], "
        "S = s_1 * |H| (MSE: fixed-size statistics, every horizon costs the same) or s_1 * sum of H "
        "(cross-entropy: the horizon at epoch e solves over e epochs of recorded samples), "
        "H the epochs of the taylor_horizons schedule"
    )
    return {
        "formula": formula, "epochs": epochs, "horizon_epochs": schedule, "convnet_input": convnet_input,
        "per_task": per_task,
        "total_s": total, "total_h": total / 3600, "complete": complete,
        "tuning": {"runs_per_task": tuning, "epochs": tuning_epochs, "train_size": params.get("tuning_train_size")},
        "left_out": "epoch-0 evaluations, Figure 2's replay of a few rounds, Figure 1, the chapters' own analysis, "
                    "papermill and the HTML build",
    }


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f} MiB"


def _secs(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s:.3g} s" if s < 100 else f"{s:.0f} s"


def report_text(result: dict[str, Any]) -> str:
    made = result["made_by"]
    lines = [f"# paper profile{' (--tiny)' if '--tiny' in made['command'].split() else ''} on "
             f"{made['device_name']}, torch {made['torch']}, optimizer {made['optimizer']}, seed {made['seed']}, "
             f"time box {made['max_seconds']:.0f} s"]
    lines += [f"{'case':<40} {'rounds':>6} {'mode':<22} {'bare/ep':>9} {'explore':>9} {'taylor':>9} {'all/ep':>9} "
              f"{'taylor/bare':>11} {'all/bare':>8} "
             f"{'solve/hz':>9} {'peak GPU':>9} {'rec state/ep':>12}"]
    for key, c in result["cases"].items():
        lines.append(
            f"{key + ' (' + c['input'] + ')':<40} {c['rounds_per_epoch']:>6} {c['mode']:<22} "
            f"{_secs(c['epoch_s']['bare']):>9} "
            f"{_secs(c['epoch_s']['explore']):>9} {_secs(c['epoch_s']['taylor']):>9} {_secs(c['epoch_s']['all']):>9} "
            f"{c['taylor_ratio']:>11.2f} {c['overhead_ratio']:>8.2f} "
            f"{_secs(c['solve_s_per_horizon']):>9} {_mib(c['peak_gpu_bytes']):>9} "
            f"{_mib(c['recorder_state_bytes_per_epoch']):>12}"
        )
    for note in result["notes"]:
        lines.append(f"note: {note}")
    for label, p in result["projection"].items():
        lines.append(f"projection ({label}, convnet on {p['convnet_input']}): {_secs(p['total_s'])} "
                     f"({p['total_h']:.2f} h){'' if p['complete'] else ' WITHOUT the solves (not timed)'}")
        for task, row in p["per_task"].items():
            lines.append(f"  {task}: {row['main_runs']} runs x {p['epochs']} epochs with all recorders + their solves "
                         f"{_secs(row['solve_s'])}, {row['exploration_runs']} exploration runs, "
                         f"{row['tuning_runs']} tuning runs "
                         f"{_secs(row['tuning_s'])}: {_secs(row['seconds'])}")
    if result["projection"]:
        lines.append(f"formula: {next(iter(result['projection'].values()))['formula']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="default cuda")
    parser.add_argument("--max-seconds", type=float, default=420.0,
                        help="time box: full epochs run only while it lasts (default 420)")
    parser.add_argument("--tiny", action="store_true",
                        help="the paper profile shrunk to run in seconds on a CPU (tests)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a paper-profile parameter")
    parser.add_argument("--optimizer", default="rmsprop", choices=("sgd", "rmsprop", "adam"))
    parser.add_argument("--case", dest="cases", action="append", choices=[f"{t}/{d}" for t, d in CASES], default=None,
                        help="measure only this case (repeatable; default all three; the projection needs "
                             "the autoencoder and a convnet case)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="rounds of the shorter slice (default: the largest recorder stride)")
    parser.add_argument("--solve-neurons", "--ce-neurons", type=int, default=5,
                        help="neurons solved per neuron group to time a horizon, the rest scaled (0: all; default 5)")
    parser.add_argument("--no-solve", dest="solve", action="store_false", help="skip the solver timings")
    parser.add_argument("--no-full-epoch", dest="full", action="store_false", help="slices only, never a whole epoch")
    parser.add_argument("--bundle", type=Path, default=None, help="data bundle folder (default <data root>/gpu_check)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the JSON (default $OUT/gpu_check.json or results/gpu_check.json)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    box = TimeBox(args.max_seconds)
    found = preflight()
    if found["numpy"] is None:
        print("error: numpy is missing; the library's training loop and recorders need it "
              "(carry a numpy wheel, see README 'Running the paper profile on a GPU')", file=sys.stderr)
        return 2
    notes = []
    if found["scipy"] is None and args.solve:
        args.solve = False
        notes.append("SciPy is missing: the Taylor optima cannot be solved, so the solver timings are skipped")
    if found["tqdm"] is None:
        notes.append("tqdm is missing: training runs without progress bars")

    from ntaylor_lib.runs.data import MissingDataError, gpu_bundle_dir
    from ntaylor_lib.runs.files import environment
    from ntaylor_lib.runs.profiles import ParameterError, get_profile, parse_assignments

    try:
        overrides = {**(TINY if args.tiny else {}), **parse_assignments(args.overrides), "device": args.device}
        params = get_profile("paper", overrides)
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ParameterError("--device cuda but torch sees no CUDA GPU; "
                                 "use --device cpu (with --tiny) to try it on a CPU")
        bundle = args.bundle or gpu_bundle_dir()
        torch.manual_seed(int(params["seed"]))
        cases, sources, first, failed = {}, {}, {}, {}
        chosen = [(t, d) for t, d in CASES if args.cases is None or f"{t}/{d}" in args.cases]
        for task, dataset in chosen:  # phase 1: slices of every case
            key = f"{task}/{dataset}"
            arrays, sources[key] = case_arrays(dataset, bundle, params, int(params["seed"]))
            try:  # a case that breaks is reported; the other cases still run (one GPU lease, one try)
                first[key] = measure_slices(task, dataset, params, arrays, args, box)
            except Exception as error:  # noqa: BLE001 -- reported in the output and the JSON
                failed[key] = _failure(key, error)
                continue
            finally:
                del arrays
            fits = {v: fit["epoch_s"] for v, fit in first[key]["fits"].items()}
            print(f"[{time.perf_counter() - box.start:6.1f} s] sliced {key}: seconds per epoch "
                  + ", ".join(f"{v} {t:.3g}" for v, t in fits.items())
                  + f"; taylor/bare {fits['taylor'] / fits['bare']:.2f}, all/bare {fits['all'] / fits['bare']:.2f}",
                  flush=True)
        for task, dataset in chosen:  # phase 2: whole epochs while the box allows
            key = f"{task}/{dataset}"
            if key in failed:
                continue
            f = first[key]
            fits = f["fits"]
            solve_guess = (f["solve"]["seconds"] or 0.0) * f["r_full"] / f["r_b"] if f["solve"] else 0.0
            needed = 1.5 * (sum(fit["epoch_s"] for fit in fits.values()) + solve_guess)
            full = None
            if args.full and needed < box.left():
                try:
                    full = measure_full(task, params, f, args, box)
                except Exception as error:  # noqa: BLE001 -- the sliced numbers stand
                    failed[f"{key} (full epoch)"] = _failure(f"{key} (full epoch)", error)
            f["why_sliced"] = "" if full is not None else (
                "--no-full-epoch" if not args.full else "the whole epoch failed" if f"{key} (full epoch)" in failed
                else f"the time box had {max(box.left(), 0):.0f} s left, a whole epoch needs about {needed:.0f} s")
            if full is not None:
                print(f"[{time.perf_counter() - box.start:6.1f} s] full epoch {key}", flush=True)
            cases[key] = summarise(key, task, dataset, params, f, full, sources[key])
            del f["data"]
            if args.device == "cuda":
                torch.cuda.empty_cache()
    except (ParameterError, MissingDataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if any(c["source"].startswith("random") for c in cases.values()):
        notes.append(next(c["source"] for c in cases.values() if c["source"].startswith("random")))
    notes += [f"{k}: {c['mode_note']}" for k, c in cases.items() if c["mode_note"]]
    notes += [f"{k} FAILED: {f['error']}" for k, f in failed.items()]
    gpu_total = torch.cuda.get_device_properties(0).total_memory if args.device == "cuda" else None
    for key, c in cases.items():
        end = c["recorder_state"]["per_epoch"].get(args.device, 0) * int(params["epochs"])
        if gpu_total and end > 0.5 * gpu_total:
            notes.append(f"{key}: the recorders would hold about {end / 2**30:.0f} GiB on the GPU by the last epoch "
                         f"(of {gpu_total / 2**30:.0f} GiB): the full run does not fit as configured")
    result = {
        "made_by": {
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "profile": "paper", "overrides": {k: v for k, v in overrides.items()}, "optimizer": args.optimizer,
            "seed": int(params["seed"]), "max_seconds": args.max_seconds, "solve_neurons": args.solve_neurons,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "torch_cuda_build": torch.version.cuda,
            "gpu_total_bytes": torch.cuda.get_device_properties(0).total_memory if args.device == "cuda" else None,
            **environment(args.device), **{f"{k}_version": v for k, v in found.items()},
        },
        "data": {"bundle": str(bundle),
                 "files": {p.name: p.stat().st_size for p in sorted(Path(bundle).glob("*.pt.gz"))}},
        "cases": cases,
        "projection": {
            label: projection(params, cases, convnet_input)
            for label, convnet_input in (("paper", params["convnet_dataset"]), ("convnet_dataset=mnist", "mnist"))
            # a failed or unchosen case leaves it out
            if {"autoencoder/mnist", f"convnet/{convnet_input}"} <= set(cases)
        },
        "failed": failed,
        "notes": notes,
        "wall_s": time.perf_counter() - box.start,
    }
    text = report_text(result)
    target = args.json or (Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "results") / "gpu_check.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1, default=str))
    print(text)
    print(f"wrote {target} ({result['wall_s']:.0f} s in all)")
    return 1 if failed else 0


def _failure(key: str, error: Exception) -> dict[str, str]:
    """A case that raised: its traceback on stderr now, its message in the report."""
    print(f"error in {key}:", file=sys.stderr)
    traceback.print_exc()
    return {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}


def summarise(key: str, task: str, dataset: str, params, first: dict[str, Any], full: dict[str, Any] | None,
              source: str) -> dict[str, Any]:
    """One case's row: measured whole-epoch numbers where there are some, else those scaled from the slices."""
    r_full, r_b = first["r_full"], first["r_b"]
    sliced_epoch = {v: fit["epoch_s"] for v, fit in first["fits"].items()}
    epoch = dict(sliced_epoch)
    solve, mode, note = first["solve"], f"scaled from {r_b} rounds", ""
    if full is not None:
        epoch.update(full["epoch_s"])
        missing = [v for v in VARIANTS if v not in full["epoch_s"]]
        mode = "full epoch" if not missing else "full epoch (part)"
        if missing:
            note = f"{', '.join(missing)} scaled from slices (the time box ran out)"
        if full.get("solve") is not None:
            solve = full["solve"]
    else:
        note = f"seconds per epoch scaled from the slices' straight line ({first['why_sliced']})"
    s1 = None
    if solve is not None and solve["seconds"] is not None:
        s1 = solve["seconds"]
        if solve["growth"] == "linear" and full is None:
            # the slice recorded fewer rounds than an epoch; the solve is linear in recorded samples
            stride = solve["stride"]
            s1 *= math.ceil(r_full / stride) / max(solve["recorded_rounds"], 1)
    state = first["state"] if full is None else full.get("state", first["state"])
    state_epoch = sum(state["per_epoch"].values())
    peaks = [p for p in (first["peak"], None if full is None else full["peak"]) if p is not None]
    cfg = first["config"]
    return {
        "task": task, "dataset": dataset, "input": INPUTS["autoencoder" if task == "autoencoder" else dataset],
        "source": source, "batch": cfg.batch_size, "width": cfg.width, "train_samples": r_full * cfg.batch_size,
        "rounds_per_epoch": r_full, "mode": mode, "mode_note": note,
        "epoch_s": epoch, "epoch_s_from_slices": sliced_epoch, "slices": first["slices"],
        "overhead_ratio": epoch["all"] / epoch["bare"], "explore_ratio": epoch["explore"] / epoch["bare"],
        "taylor_ratio": epoch["taylor"] / epoch["bare"],
        "solve_s_per_horizon": s1, "solve_growth": "constant" if task == "autoencoder" else "linear",
        "solve_detail": solve,
        "peak_gpu_bytes": max(peaks) if peaks else None,
        "recorder_state": state, "recorder_state_bytes_per_epoch": state_epoch,
        "recorder_state_bytes_at_end": state_epoch * int(params["epochs"]),
    }


if __name__ == "__main__":
    sys.exit(main())
