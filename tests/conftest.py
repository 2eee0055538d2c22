import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the flat top level: `import generator` etc.
torch.set_num_threads(1)  # small ops: one thread is faster, and immune to a busy second core


@pytest.fixture
def tiny_G():
    """An untrained, small generator: enough to test shapes, determinism and plumbing in milliseconds."""
    from generator import Generator
    torch.manual_seed(0)
    return Generator(latent_dim=8, num_classes=3, width=4).eval().requires_grad_(False)
