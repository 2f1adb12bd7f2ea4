import sys
from pathlib import Path

import torch

# Tests run from the repository root as `python -m pytest`; make `core`, `tabs`, `app` importable anyway.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# One thread: with two, OpenMP threads spin-wait on each other whenever the CPU is contended,
# which made small steps 10-20x slower here; tests are small enough that one thread is enough.
torch.set_num_threads(1)
