"""Training-loop throughput: ``ntaylor_lib.runs.training.train`` against a bare PyTorch loop.

Same model, data, optimizer, minibatch order and number of rounds; no recorders
attached. Prints seconds per epoch for each and their ratio (target: at most 1.1x).

    .venv/bin/python benchmarks/bench_training.py [--profile cpu] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from ntaylor_lib.paper.experiments import experiment_config
from ntaylor_lib.runs.allocator import retain_freed_memory
from ntaylor_lib.runs.data import task_data
from ntaylor_lib.runs.losses import batch_loss
from ntaylor_lib.runs.models import build_model
from ntaylor_lib.runs.profiles import get_profile
from ntaylor_lib.runs.training import make_optimizer, train


def bare_epoch_seconds(config, data) -> float:
    """The baseline: the loop anyone would write, without records, hooks or evaluation."""
    torch.manual_seed(config.seed)
    model = build_model(config.task, config.dataset, config.width)
    opt = make_optimizer(config, list(model.parameters()))
    gen = torch.Generator().manual_seed(config.seed)
    n, b = data.train_x.shape[0], config.batch_size
    start = time.perf_counter()
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen)[: (n // b) * b].view(-1, b)
        for idx in order:
            loss = batch_loss(config.task, model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return (time.perf_counter() - start) / config.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    retain_freed_memory()  # as the command line and the book run (ntaylor_lib.runs.allocator)
    # the profile's fixed rates: a benchmark must not depend on a tuning having run
    params = get_profile(args.profile, {"epochs": args.epochs, "device": "cpu", "lr_source": "fixed"})
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, profile {args.profile}, {args.epochs} epochs, best of {args.repeats}")
    print(f"{'task':<12} {'rounds/epoch':>12} {'bare s/epoch':>13} {'ours s/epoch':>13} {'ratio':>6}")
    for task in ("autoencoder", "convnet"):
        config = experiment_config(params, task, "rmsprop")
        data = task_data(task, config.dataset, config.train_size, config.eval_size, config.probe_size)
        bare = min(bare_epoch_seconds(config, data) for _ in range(args.repeats))
        # train() also evaluates on the evaluation subsets each epoch: count only the rounds.
        ours = min(sum(train(config, data=data, progress=False).history.epoch_time) / config.epochs
                   for _ in range(args.repeats))
        evals = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            from ntaylor_lib.runs.training import evaluate
            model = build_model(task, config.dataset, config.width)
            evaluate(task, model, data.eval_train_x, data.eval_train_y)
            evaluate(task, model, data.test_x, data.test_y)
            evals.append(time.perf_counter() - t)
        rounds = data.train_x.shape[0] // config.batch_size
        print(f"{task:<12} {rounds:>12} {bare:>13.3f} {ours:>13.3f} {ours / bare:>6.2f}"
              f"   (ours includes the per-epoch evaluation, {min(evals):.3f} s; "
              f"without it {max(ours - min(evals), 0) / bare:.2f}x)")


if __name__ == "__main__":
    main()
