"""Move a trained policy along the line from its base model: `base + alpha * (tuned - base)`.

With several tuned folders, `tuned` is their mean (checkpoint averaging, or a model soup of
runs from the same base, Wortsman et al. 2022, arXiv 2203.05482): a run whose refusal rate
swings from one checkpoint to the next can land between its swings.

alpha < 1 interpolates back towards the base (WiSE-FT, Wortsman et al. 2022,
arXiv 2109.01903); alpha > 1 extrapolates past the trained weights (ExPO, Zheng et al. 2024,
arXiv 2404.16792), which can take a run that moved in the right direction but not far enough
further for the price of an evaluation rather than more training.

    python -m mogrpo.model_merge --base smollm2-135m-instruct --tuned runs/align/final \\
        --alpha 2.0 --out runs/align-x2
    python -m mogrpo.model_merge --base smollm2-135m-instruct \\
        --tuned runs/align-a/final runs/align-b/final --alpha 1 --out runs/align-avg

The result is a Hugging Face folder (safetensors, the tuned folder's config and tokenizer),
written atomically; `python -m evaluation --policy NAME=OUT` evaluates it.
"""

from __future__ import annotations

import argparse
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from mogrpo.atomic import write_folder_atomically
from mogrpo.models import ModelNotFoundError, resolve_model

WEIGHTS = "model.safetensors"


def merge_state_dicts(
    base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor] | Sequence[dict[str, torch.Tensor]], alpha: float
) -> dict[str, torch.Tensor]:
    """`base + alpha * (mean(tuned) - base)` tensor by tensor, computed in float32 and returned
    in the (first) tuned tensor's dtype. All must hold the same names with the same shapes."""
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha}")
    tuned_list = [tuned] if isinstance(tuned, dict) else list(tuned)
    if not tuned_list:
        raise ValueError("no tuned weights given")
    for i, t in enumerate(tuned_list):
        if base.keys() != t.keys():
            only_base, only_tuned = sorted(base.keys() - t.keys()), sorted(t.keys() - base.keys())
            raise ValueError(f"base and tuned #{i} weights differ in names: only in base {only_base[:5]}, only in tuned {only_tuned[:5]}")
    merged = {}
    for name, b in base.items():
        for i, t in enumerate(tuned_list):
            if t[name].shape != b.shape:
                raise ValueError(f"weight {name!r}: base shape {tuple(b.shape)} != tuned #{i} shape {tuple(t[name].shape)}")
        b32 = b.float()
        mean = torch.stack([t[name].float() for t in tuned_list]).mean(dim=0)
        merged[name] = (b32 + alpha * (mean - b32)).to(tuned_list[0][name].dtype)
    return merged


def _weights_file(folder: Path) -> Path:
    path = folder / WEIGHTS
    if not path.is_file():
        found = sorted(p.name for p in folder.glob("*.safetensors*"))
        raise ModelNotFoundError(f"{path} is missing (found {found or 'no safetensors files'}; expected one unsharded {WEIGHTS})")
    return path


def merge_model_folders(base_ref: str, tuned_refs: str | Sequence[str], alpha: float, out: Path) -> Path:
    """Write `base + alpha * (mean(tuned) - base)` to the folder `out` (see the module docstring);
    config and tokenizer come from the first tuned folder."""
    from safetensors.torch import load_file, save_file

    tuned_dirs = [resolve_model(r) for r in ([tuned_refs] if isinstance(tuned_refs, str) else tuned_refs)]
    base_dir, tuned_dir = resolve_model(base_ref), tuned_dirs[0]
    merged = merge_state_dicts(load_file(_weights_file(base_dir)), [load_file(_weights_file(d)) for d in tuned_dirs], alpha)

    def fill(tmp: Path) -> None:
        for f in tuned_dir.iterdir():
            if f.is_file() and f.suffix != ".safetensors" and not f.name.endswith(".safetensors.index.json"):
                shutil.copy2(f, tmp / f.name)
        save_file(merged, str(tmp / WEIGHTS), metadata={"format": "pt", "merged_alpha": repr(alpha), "averaged": str(len(tuned_dirs))})

    return write_folder_atomically(Path(out), fill)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mogrpo.model_merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the model training started from (built-in name or folder)")
    parser.add_argument("--tuned", required=True, nargs="+", help="the trained model folder(s), e.g. runs/NAME/final; several are averaged")
    parser.add_argument("--alpha", type=float, required=True, help="0 gives the base, 1 the tuned model, 2 twice its step")
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    args = parser.parse_args(argv)
    out = merge_model_folders(args.base, args.tuned, args.alpha, args.out)
    tuned = "tuned" if len(args.tuned) == 1 else f"mean of {len(args.tuned)} tuned"
    print(f"wrote {out} = base + {args.alpha} * ({tuned} - base)")


if __name__ == "__main__":
    main()
