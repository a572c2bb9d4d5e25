"""A process's random number generator states (Python, NumPy, torch CPU) as JSON, so that a
resumed run draws what the uninterrupted one would have."""

from __future__ import annotations

import base64
import random

import numpy as np
import torch


def capture_rng() -> dict:
    """This process's Python, NumPy and torch (CPU) RNG states, as JSON."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, gauss_next = random.getstate()
    return {"python": [version, list(state), gauss_next],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
            "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}


def restore_rng(rng: dict) -> None:
    """Undo `capture_rng` (nothing to do for an empty dict)."""
    if not rng:
        return
    version, state, gauss_next = rng["python"]
    random.setstate((version, tuple(state), gauss_next))
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(rng["torch"]), dtype=np.uint8).copy()))
