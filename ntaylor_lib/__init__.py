"""Neural Taylor approximations: a reproducible companion to Balduzzi, McWilliams and
Butler-Yeoman (ICML 2017).

The core (data, models, training, store, profiles) imports with torch, torchvision,
numpy, scipy and tqdm alone; charting and notebook helpers load only where used.
"""

__version__ = "0.1.0"

from .configurations import (
    ConfigurationRecorder,
    activation_configuration,
    pack_bits,
    packed_configuration,
    unpack_bits,
)
from .data import MissingDataError, TaskData, default_data_root, prepare_mnist, task_data
from .exploration import (
    exploration_metrics,
    hamming_matrix,
    log_volume,
    log_volume_reference,
    novelty,
    novelty_reference,
    subsample_units,
    switches,
    switches_reference,
)
from .losses import batch_loss, per_sample_loss
from .models import ReluNet, Trace, autoencoder, build_model, convnet
from .profiles import ParameterError, get_profile
from .signed_gradient import SignedGradientRecorder, signed_gradient, step_cosines
from .store import Run, RunStore, run_key
from .training import Recorder, RunConfig, run_config, train
from .jacobians import Scale, jacrev_jacobian, reference_jacobian, scale_jacobian, scale_vector
from .taylor import clamped_output, linearize, taylor_approximation, taylor_loss
from .recorders import CEFactorRecorder, Group, MSEStatsRecorder
from .solver import solve_cross_entropy, solve_quadratic
from .regret import loglog_slope, regret_curves, regret_table, taylor_recorders

__all__ = [
    "Scale",
    "jacrev_jacobian",
    "reference_jacobian",
    "scale_jacobian",
    "scale_vector",
    "clamped_output",
    "linearize",
    "taylor_approximation",
    "taylor_loss",
    "CEFactorRecorder",
    "Group",
    "MSEStatsRecorder",
    "solve_cross_entropy",
    "solve_quadratic",
    "loglog_slope",
    "regret_curves",
    "regret_table",
    "taylor_recorders",
    "ConfigurationRecorder",
    "activation_configuration",
    "pack_bits",
    "packed_configuration",
    "unpack_bits",
    "exploration_metrics",
    "hamming_matrix",
    "log_volume",
    "log_volume_reference",
    "novelty",
    "novelty_reference",
    "subsample_units",
    "switches",
    "switches_reference",
    "SignedGradientRecorder",
    "signed_gradient",
    "step_cosines",
    "MissingDataError",
    "ParameterError",
    "Recorder",
    "ReluNet",
    "Run",
    "RunConfig",
    "RunStore",
    "TaskData",
    "Trace",
    "autoencoder",
    "batch_loss",
    "build_model",
    "convnet",
    "default_data_root",
    "get_profile",
    "per_sample_loss",
    "prepare_mnist",
    "run_config",
    "run_key",
    "task_data",
    "train",
]
