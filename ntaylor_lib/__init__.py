"""Neural Taylor approximations: a reproducible companion to Balduzzi, McWilliams and
Butler-Yeoman (ICML 2017).

The core (data, models, training, store, profiles) imports with torch, torchvision,
numpy, scipy and tqdm alone; charting and notebook helpers load only where used.
"""

__version__ = "0.1.0"

from .data import MissingDataError, TaskData, default_data_root, prepare_mnist, task_data
from .losses import batch_loss, per_sample_loss
from .models import ReluNet, Trace, autoencoder, build_model, convnet
from .profiles import ParameterError, get_profile
from .store import Run, RunStore, run_key
from .training import Recorder, RunConfig, run_config, train

__all__ = [
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
