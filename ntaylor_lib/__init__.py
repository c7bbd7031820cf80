"""Neural Taylor approximations: a reproducible companion to Balduzzi, McWilliams and
Butler-Yeoman, *Neural Taylor Approximations: Convergence and Exploration in Rectifier
Networks* (ICML 2017).

The names here are the maths a user calls on their own ReLU networks; everything else
lives in the subpackages, each importing only from those listed before it:

- :mod:`ntaylor_lib.runs`: profiles, data, models, losses, the recorder contract, training, the run store;
- :mod:`ntaylor_lib.taylor`: Jacobians, Taylor approximations and losses, the Taylor-optimum solver,
  the recorders that collect what it needs, regret;
- :mod:`ntaylor_lib.exploration`: activation configurations and the exploration metrics;
- :mod:`ntaylor_lib.sweep`: a notebook executed over a grid of parameters;
- :mod:`ntaylor_lib.paper`: the paper's experiments, learning-rate tuning and claims;
- :mod:`ntaylor_lib.site`: the book's build, pages and charts; :mod:`ntaylor_lib.cli`: the command line.

The core (``runs``, ``taylor``, ``exploration``) imports with torch and NumPy alone (SciPy for
the solver, tqdm for progress bars, torchvision for loading data: each optional where it
can be).
"""

from ._version import __version__
from .exploration.configurations import activation_configuration
from .exploration.metrics import log_volume, novelty, switches
from .exploration.signed_gradient import signed_gradient
from .runs.models import ReluNet, build_model
from .taylor.jacobians import Scale, scale_jacobian
from .taylor.linearize import clamped_output, linearize, taylor_approximation, taylor_loss
from .taylor.regret import loglog_slope, regret_curves
from .taylor.solver import solve_cross_entropy, solve_quadratic

__all__ = [
    "ReluNet",
    "Scale",
    "__version__",
    "activation_configuration",
    "build_model",
    "clamped_output",
    "linearize",
    "log_volume",
    "loglog_slope",
    "novelty",
    "regret_curves",
    "scale_jacobian",
    "signed_gradient",
    "solve_cross_entropy",
    "solve_quadratic",
    "switches",
    "taylor_approximation",
    "taylor_loss",
]
