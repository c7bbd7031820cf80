"""Small random dense and conv ReLU nets (with max-pooling), their minibatches, and a driver that
trains them by SGD while calling a recorder's hooks as the training loop does: shared by the
Taylor tests."""

from types import SimpleNamespace

import torch
from torch import nn

from ntaylor_lib.runs.models import ReluNet
from ntaylor_lib.runs.training import training_step
from ntaylor_lib.taylor.jacobians import Scale, scale_jacobian, scale_vector


def small_nets(seed: int = 0):
    """``[(name, net, x), ...]`` in float64: a dense net and a conv net with max-pooling."""
    torch.manual_seed(seed)
    dense = ReluNet([nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 7)]).double()
    conv = ReluNet(
        [nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 2 * 2, 5), nn.Linear(5, 3)],
        pool=[True, True, False, False],
    ).double()
    return [("dense", dense, torch.randn(5, 6, dtype=torch.float64)),
            ("conv", conv, torch.randn(4, 2, 8, 8, dtype=torch.float64))]


def all_scales(net: ReluNet):
    """Network, every layer, and neuron 1 of every layer."""
    return [Scale()] + [Scale(l) for l in range(1, net.depth + 1)] + [Scale(l, 1) for l in range(1, net.depth + 1)]


def drive(recorder, net, batches, task, epochs=2, lr=0.05, traced=False):
    """Train ``net`` by SGD on ``batches`` (split into ``epochs``), calling the recorder's hooks
    as the training loop does (``traced``: with the forward trace and gradients handed over)."""
    recorder.setup(net, None, SimpleNamespace(epochs=epochs, device="cpu"))
    recorder.on_epoch_end(0, net)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    snapshots, per_epoch = [], len(batches) // epochs
    for n, (x, y) in enumerate(batches):
        snapshots.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        recorder.on_round(n, net, x, y)
        training_step(task, net, opt, x, y, n, [recorder] if traced else [])
        if (n + 1) % per_epoch == 0:
            recorder.on_epoch_end((n + 1) // per_epoch, net)
    recorder.on_train_end(net, "complete")
    return snapshots


def rows_at(net, snapshots, batches, scale, task):
    """Stacked per-sample Jacobians and targets of every round (the batch least-squares problem)."""
    a_rows, b_rows = [], []
    for state, (x, y) in zip(snapshots, batches):
        net.load_state_dict(state)
        j = scale_jacobian(net, x, scale)  # (N, K, P)
        c = torch.einsum("nkp,p->nk", j, scale_vector(net, scale).detach()) - (net(x).detach() - y)
        a_rows.append(j.reshape(-1, j.shape[-1]))
        b_rows.append(c.reshape(-1))
    return torch.cat(a_rows).numpy(), torch.cat(b_rows).numpy()


def dense_batches(net, rounds=6, n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    d_in, d_out = net.layer(1).in_features, net.layer(net.depth).out_features
    return [(torch.randn(n, d_in, generator=g, dtype=torch.float64),
             torch.randn(n, d_out, generator=g, dtype=torch.float64)) for _ in range(rounds)]


def rows_scale(net, state, scale):
    net.load_state_dict(state)
    return scale_vector(net, scale).detach().numpy()


def conv_batches(net, x, rounds=6, seed=2):
    g = torch.Generator().manual_seed(seed)
    k = net(x).shape[1]
    return [(torch.randn(x.shape, generator=g, dtype=torch.float64), torch.randint(0, k, (x.shape[0],), generator=g))
            for _ in range(rounds)]
