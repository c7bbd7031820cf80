#!/usr/bin/env bash
# The paper profile on one CUDA GPU: a time-boxed slice and a projection of the whole
# (benchmarks/gpu_check.py; README.md, "Running the paper profile on a GPU").
#
#   bash benchmarks/gpu_check.sh [--max-seconds 420] [--device cuda|cpu] [--tiny] [--set KEY=VALUE ...]
#
# Installs nothing and reaches no network: it runs the checkout's ntaylor_lib (not
# installed there) with the machine's python3 (or $PYTHON), which needs torch and numpy;
# SciPy (solver timings) and tqdm are optional. The data come from data/gpu_check/,
# written beforehand by `python -m ntaylor_lib data --gpu-bundle`.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: no $python on PATH; set PYTHON=/path/to/python" >&2
    exit 2
fi
bundle="${NTAYLOR_DATA:-$here/data}/gpu_check"

echo "== preflight"
PYTHONPATH="$here" "$python" - "$bundle" <<'PY'
import importlib, platform, sys
from pathlib import Path
print(f"python {platform.python_version()} ({sys.executable})")
try:
    import torch
except ImportError:
    sys.exit("error: torch is missing from this python; set PYTHON to one that has it")
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, CUDA available: {cuda}")
if cuda:
    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s)")
missing = []
for name, role in (("numpy", "needed"), ("scipy", "solver timings (skipped without it)"), ("tqdm", "progress bars (optional)")):
    try:
        version = getattr(importlib.import_module(name), "__version__", "present")
        print(f"  {name:<8} {version:<12} {role}")
    except ImportError:
        print(f"  {name:<8} {'MISSING':<12} {role}")
        missing.append(name)
print("  not needed: torchvision (the bundle replaces it), PyYAML, jupyter, papermill, altair")
if "numpy" in missing:
    sys.exit("error: numpy is missing; carry a numpy wheel for this python (README: 'Running the paper profile on a GPU')")
bundle = Path(sys.argv[1])
files = sorted(bundle.glob("*.pt.gz"))
for f in files:
    print(f"  bundle {f} ({f.stat().st_size / 2**20:.1f} MiB)")
if not (bundle / "mnist.pt.gz").is_file():
    sys.exit(f"error: no data bundle at {bundle}/mnist.pt.gz. On a machine with the data, run "
             "`python -m ntaylor_lib data --gpu-bundle` and carry data/gpu_check along with the checkout.")
if not (bundle / "cifar10.pt.gz").is_file():
    print("  no cifar10.pt.gz: the convnet runs on random CIFAR-sized inputs (3x32x32)")
PY
status=$?
if [ "$status" -ne 0 ]; then
    exit "$status"
fi
echo "== gpu_check"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 exec "$python" "$here/benchmarks/gpu_check.py" "$@"
