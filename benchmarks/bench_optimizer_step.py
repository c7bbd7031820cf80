"""Training rounds of the paper's autoencoder with each of PyTorch's optimizer implementations (CPU).

PyTorch steps CPU tensors one parameter at a time by default (``foreach`` and ``fused`` are
its defaults for CUDA tensors only). The paper's autoencoder has 14 small parameter tensors
(83k numbers), so Adam's and RMSProp's steps cost their dispatch (a dozen small operations
per tensor) more than their arithmetic. This trains the same rounds (the same minibatches of
MNIST, mean squared error) with SGD, then Adam and RMSProp as the book builds them (the
default implementation) and with ``foreach`` and, where PyTorch has one, ``fused``; it prints
milliseconds per round, the ratio to the default, and the final loss (``foreach`` computes
the same numbers; ``fused`` rounds differently)::

    python benchmarks/bench_optimizer_step.py [--rounds 1500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import inspect
import platform
import time

import torch
import torch.nn.functional as F

from ntaylor_lib.runs.allocator import retain_freed_memory
from ntaylor_lib.runs.data import task_data
from ntaylor_lib.runs.models import build_model

SETTINGS = {"sgd": {"lr": 0.05}, "rmsprop": {"lr": 1e-3, "alpha": 0.9, "eps": 1e-10},
            "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}}
CLASSES = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}


def rounds(name: str, variant: dict, x: torch.Tensor, order: torch.Tensor) -> tuple[float, float]:
    """``(seconds per round, final loss)`` of training on the minibatches ``order``."""
    torch.manual_seed(0)
    model = build_model("autoencoder")
    opt = CLASSES[name](model.parameters(), **SETTINGS[name], **variant)
    start = time.perf_counter()
    for idx in order:
        batch = x[idx]
        loss = F.mse_loss(model(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / len(order), float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    retain_freed_memory()  # as the book's pages run
    data = task_data("autoencoder", "mnist", 0, 100, 10)
    n = len(data.train_x) // 64
    order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))[: n * 64].view(n, 64)
    order = order.repeat(-(-args.rounds // n), 1)[: args.rounds]
    params = sum(p.numel() for p in build_model("autoencoder").parameters())
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; autoencoder ({params:,} parameters), {args.rounds} rounds of 64, best of {args.repeats}")
    print(f"{'optimizer':<9} {'variant':<8} {'ms/round':>8} {'default/this':>12} {'final loss':>12}")
    for name, cls in CLASSES.items():
        variants = {"default": {}}
        if name != "sgd":
            variants["foreach"] = {"foreach": True}
            if "fused" in inspect.signature(cls).parameters:
                variants["fused"] = {"fused": True}
        base = None
        for label, variant in variants.items():
            results = [rounds(name, variant, data.train_x, order) for _ in range(args.repeats)]
            best = min(r[0] for r in results)
            base = best if base is None else base
            print(f"{name:<9} {label:<8} {1e3 * best:>8.3f} {base / best:>11.2f}x {results[0][1]:>12.6g}")


if __name__ == "__main__":
    main()
