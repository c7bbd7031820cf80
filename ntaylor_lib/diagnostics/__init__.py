"""The paper's diagnostics on your own network: :func:`attach` to an ``nn.Sequential``, keep your loop."""

from .api import TaylorDiagnostics, attach
from .sequential import SUPPORTED, UnsupportedModule

__all__ = ["SUPPORTED", "TaylorDiagnostics", "UnsupportedModule", "attach"]
