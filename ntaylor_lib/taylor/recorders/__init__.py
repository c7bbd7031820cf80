"""Taylor recorders: what the hindsight Taylor optimum needs, collected while a run trains.

- :class:`MSEStatsRecorder` (squared error): exact streaming statistics, every round.
- :class:`CEFactorRecorder` (cross-entropy): per-sample Jacobian factors of small scales.
- :class:`CEReplayRecorder` (cross-entropy): whole layers from replayed weight snapshots.

Each keeps the iterates' box and solves ``TO_S(N)`` at every horizon when training ends
(:class:`TaylorRecorder`).
"""

from .base import Group, TaylorRecorder, spread
from .ce_factors import CEFactorRecorder
from .ce_replay import CEReplayRecorder
from .mse import MSEStatsRecorder

__all__ = ["CEFactorRecorder", "CEReplayRecorder", "Group", "MSEStatsRecorder", "TaylorRecorder", "spread"]
