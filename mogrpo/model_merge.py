"""Move a trained policy along the line from its base model: `base + alpha * (tuned - base)`.

alpha < 1 interpolates back towards the base (WiSE-FT, Wortsman et al. 2022,
arXiv 2109.01903); alpha > 1 extrapolates past the trained weights (ExPO, Zheng et al. 2024,
arXiv 2404.16792), which can take a run that moved in the right direction but not far enough
further for the price of an evaluation rather than more training.

    python -m mogrpo.model_merge --base smollm2-135m-instruct --tuned runs/align/final \\
        --alpha 2.0 --out runs/align-x2

The result is a Hugging Face folder (safetensors, the tuned folder's config and tokenizer),
written atomically; `python -m evaluation --policy NAME=OUT` evaluates it.
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import torch

from mogrpo.atomic import write_folder_atomically
from mogrpo.models import ModelNotFoundError, resolve_model

WEIGHTS = "model.safetensors"


def merge_state_dicts(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """`base + alpha * (tuned - base)` tensor by tensor, computed in float32 and returned in
    the tuned tensor's dtype. Both must hold the same names with the same shapes."""
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha}")
    if base.keys() != tuned.keys():
        only_base, only_tuned = sorted(base.keys() - tuned.keys()), sorted(tuned.keys() - base.keys())
        raise ValueError(f"base and tuned weights differ in names: only in base {only_base[:5]}, only in tuned {only_tuned[:5]}")
    merged = {}
    for name, t in tuned.items():
        b = base[name]
        if b.shape != t.shape:
            raise ValueError(f"weight {name!r}: base shape {tuple(b.shape)} != tuned shape {tuple(t.shape)}")
        b32 = b.float()
        merged[name] = (b32 + alpha * (t.float() - b32)).to(t.dtype)
    return merged


def _weights_file(folder: Path) -> Path:
    path = folder / WEIGHTS
    if not path.is_file():
        found = sorted(p.name for p in folder.glob("*.safetensors*"))
        raise ModelNotFoundError(f"{path} is missing (found {found or 'no safetensors files'}; expected one unsharded {WEIGHTS})")
    return path


def merge_model_folders(base_ref: str, tuned_ref: str, alpha: float, out: Path) -> Path:
    """Write `base + alpha * (tuned - base)` to the folder `out` (see the module docstring)."""
    from safetensors.torch import load_file, save_file

    base_dir, tuned_dir = resolve_model(base_ref), resolve_model(tuned_ref)
    merged = merge_state_dicts(load_file(_weights_file(base_dir)), load_file(_weights_file(tuned_dir)), alpha)

    def fill(tmp: Path) -> None:
        for f in tuned_dir.iterdir():
            if f.is_file() and f.suffix != ".safetensors" and not f.name.endswith(".safetensors.index.json"):
                shutil.copy2(f, tmp / f.name)
        save_file(merged, str(tmp / WEIGHTS), metadata={"format": "pt", "merged_alpha": repr(alpha)})

    return write_folder_atomically(Path(out), fill)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mogrpo.model_merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the model training started from (built-in name or folder)")
    parser.add_argument("--tuned", required=True, help="the trained model folder, e.g. runs/NAME/final")
    parser.add_argument("--alpha", type=float, required=True, help="0 gives the base, 1 the tuned model, 2 twice its step")
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    args = parser.parse_args(argv)
    out = merge_model_folders(args.base, args.tuned, args.alpha, args.out)
    print(f"wrote {out} = base + {args.alpha} * (tuned - base)")


if __name__ == "__main__":
    main()
