"""Fixtures of the model tests: one torch thread, to be fair to the other test areas on a 2-core machine."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
