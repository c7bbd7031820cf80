"""Training rounds of the paper's autoencoder with subnormal float32 numbers kept (PyTorch's default) or flushed.

RMSProp's and Adam's second moments average squared gradients; a gradient below about 1e-19
squares to a subnormal float32 number, which x86 CPUs compute with many times the cycles of a
normal one. This trains the same minibatches of MNIST (mean squared error, the book's settings
of each optimizer) twice from the same seed, subnormals kept and then flushed
(``ntaylor_lib.runs.training.denormals_flushed``, which ``train`` holds), and prints the seconds
per block of rounds (the kept ones slow down as the moments fill with subnormals), the ratio of
the whole, the final losses and the largest difference between the two runs' weights::

    python benchmarks/bench_denormals.py [--rounds 3000] [--block 500] [--optimizers adam rmsprop sgd]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F
from bench_optimizer_step import CLASSES, SETTINGS  # the same optimizers and settings as that benchmark

from ntaylor_lib.runs.allocator import retain_freed_memory
from ntaylor_lib.runs.data import task_data
from ntaylor_lib.runs.models import build_model
from ntaylor_lib.runs.training import denormals_flushed


def run(name: str, x: torch.Tensor, order: torch.Tensor, block: int, flush: bool):
    """Seconds per block of rounds, the final loss and the trained weights."""
    torch.manual_seed(0)
    model = build_model("autoencoder")
    opt = CLASSES[name](model.parameters(), **SETTINGS[name])
    times, loss = [], float("nan")
    with denormals_flushed() if flush else contextlib.nullcontext():
        start = time.perf_counter()
        for i, idx in enumerate(order):
            batch = x[idx]
            loss = F.mse_loss(model(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (i + 1) % block == 0:
                times.append(time.perf_counter() - start)
                start = time.perf_counter()
    return times, float(loss.detach()), torch.cat([p.detach().flatten() for p in model.parameters()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--optimizers", nargs="+", default=["adam", "rmsprop", "sgd"], choices=list(CLASSES))
    args = parser.parse_args()
    retain_freed_memory()
    data = task_data("autoencoder", "mnist", 0, 100, 10)  # all 60k training images
    g = torch.Generator().manual_seed(0)
    per_epoch = len(data.train_x) // 64
    epochs = -(-args.rounds // per_epoch)
    order = torch.cat([torch.randperm(len(data.train_x), generator=g)[: per_epoch * 64].view(-1, 64)
                       for _ in range(epochs)])[: args.rounds]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} rounds of 64 images, "
          f"seconds per {args.block} rounds")
    for name in args.optimizers:
        kept, loss_kept, w_kept = run(name, data.train_x, order, args.block, flush=False)
        flushed, loss_flushed, w_flushed = run(name, data.train_x, order, args.block, flush=True)
        print(f"  {name:8s} kept:    {' '.join(f'{t:5.2f}' for t in kept)}  final loss {loss_kept:.10g}")
        print(f"  {name:8s} flushed: {' '.join(f'{t:5.2f}' for t in flushed)}  final loss {loss_flushed:.10g}")
        diff = float((w_kept - w_flushed).abs().max())
        print(f"  {name:8s} kept / flushed: {sum(kept) / sum(flushed):.2f}x; largest weight difference {diff:.1e}")


if __name__ == "__main__":
    main()
