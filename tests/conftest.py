import sys
from pathlib import Path

import torch

# Tests run from the repository root as `python -m pytest`; make `core`, `tabs`, `app` importable anyway.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
