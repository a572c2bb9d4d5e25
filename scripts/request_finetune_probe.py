"""Experiment: does fine-tuning the request encoder's top layers on the `harmful_request`
label separate held-out harmful requests from XSTest's safe prompts better than a probe on
frozen features?

    .venv/bin/python scripts/request_finetune_probe.py --config runs/rm-framed/training_config.yaml

Caches layer `--from-layer`'s hidden sequences of every request once, then trains the layers
above it (to the encoder's deepest layer) and a linear head on the [last, mean] view of the
top layer. Reports AUROC and the flagged rates (at 0.5 and at other thresholds) on the direction
check's requests (held-out harmful, benign, XSTest safe test prompts) and Safety-Tuned LLaMAs'
physical-safety and controversial evaluation sets, for the frozen probe,
after each epoch, and for the weight averages of two or more consecutive epochs.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch
from torch import nn

from mogrpo.config import load_yaml_section
from mogrpo.config.reward_training import RewardTrainConfig
from mogrpo.request_encoder import RequestEncoderSpec, build_request_encoder
from reward_training.dataset import load_splits, resolve_data_dir
from reward_training.evaluate import BENIGN_HELD_OUT, HARMFUL_HELD_OUT, auroc
from reward_training.request_finetune import TopLayers, batches, hidden_states_at, request_targets
from reward_training.refusal_sources import XSTEST_PROMPTS, read_prompt_file, xstest_key
from reward_training.sources import _read_csv, assign_split


def split_targets(cfg: RewardTrainConfig, split: str) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Distinct requests with a harmful_request target in `split`, read as a build reads them:
    (requests, target, weight)."""
    rows = load_splits(cfg.data, cfg.model.labels, cfg.train.seed, splits=(split,))[split]
    return request_targets(rows, "harmful_request", cfg.data.sources)


def eval_sets(cfg: RewardTrainConfig) -> dict[str, list[str]]:
    d, data_dir = cfg.data, resolve_data_dir(cfg.data.data_dir)
    rng = random.Random(0)
    harmful = read_prompt_file(data_dir / HARMFUL_HELD_OUT, "instruction")
    benign = read_prompt_file(data_dir / BENIGN_HELD_OUT, "instruction")
    harmful, benign = (rng.sample(x, min(150, len(x))) for x in (harmful, benign))
    xs = {"safe": [], "unsafe": []}
    for r in _read_csv(data_dir / XSTEST_PROMPTS):
        if assign_split("xstest", xstest_key(r["id"]), d.split_seed, d.val_fraction, d.test_fraction) == "test":
            xs[r["label"]].append(r["prompt"])
    stl = {name: read_prompt_file(data_dir / f"safety_tuned_llamas/evaluation/I-{file}.json", "instructions")
           for name, file in [("physical_safe", "PhysicalSafetySafe"), ("physical_unsafe", "PhysicalSafetyUnsafe"),
                              ("controversial", "Controversial")]}
    return {"harmful": harmful, "benign": benign, "xstest_safe": xs["safe"], "xstest_unsafe": xs["unsafe"], **stl}


def scores(model: TopLayers, states: list[torch.Tensor]) -> np.ndarray:
    out = np.zeros(len(states))
    model.eval()
    with torch.inference_mode():
        for g, hidden, lengths in batches(states, 64, None):
            out[g.numpy()] = torch.sigmoid(model(hidden, lengths)).numpy()
    return out


def average_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of state dicts with the same keys (a weight average along the run)."""
    return {k: sum(sd[k] for sd in states) / len(states) for k in states[0]}


THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
"""Thresholds at which the flagged shares of harmful / benign / XSTest safe are reported."""


def report(tag: str, s: dict[str, np.ndarray]) -> dict:
    m = {"tag": tag,
         "auroc_harmful_vs_xstest_safe": auroc(np.r_[np.ones(len(s["harmful"])), np.zeros(len(s["xstest_safe"]))],
                                               np.r_[s["harmful"], s["xstest_safe"]]),
         "auroc_harmful_vs_benign": auroc(np.r_[np.ones(len(s["harmful"])), np.zeros(len(s["benign"]))],
                                          np.r_[s["harmful"], s["benign"]]),
         "auroc_xstest": auroc(np.r_[np.ones(len(s["xstest_unsafe"])), np.zeros(len(s["xstest_safe"]))],
                               np.r_[s["xstest_unsafe"], s["xstest_safe"]])}
    for k, v in s.items():
        m[f"flagged/{k}"] = float((v >= 0.5).mean())
    for t in THRESHOLDS:
        m[f"at_{t}"] = "/".join(f"{float((s[k] >= t).mean()):.3f}" for k in ("harmful", "benign", "xstest_safe"))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}), flush=True)
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--from-layer", type=int, default=22)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--probe-epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default="runs/request-finetune-probe.jsonl")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    cfg = load_yaml_section(RewardTrainConfig, args.config, [])
    train_p, y, w = split_targets(cfg, "train")
    val_p, val_y, _ = split_targets(cfg, "val")
    ev = eval_sets(cfg)
    print(f"train {len(train_p)} requests ({float(y.mean()):.2f} harmful), val {len(val_p)}; eval "
          + ", ".join(f"{k} {len(v)}" for k, v in ev.items()), flush=True)
    enc = build_request_encoder(RequestEncoderSpec(**cfg.model.request_encoder.model_dump(exclude={"finetune"})))
    every = train_p + val_p + [p for v in ev.values() for p in v]
    states = dict(zip(every, hidden_states_at(enc, every, args.from_layer)))
    train_s, val_s = [states[p] for p in train_p], [states[p] for p in val_p]
    model = TopLayers(enc, args.from_layer)
    for p in [*model.layers.parameters(), *model.norm.parameters()]:  # the frozen probe first: probe only
        p.requires_grad_(False)
    rng = random.Random(0)
    snapshots = []

    def report_and_log(tag: str, **extra: float) -> None:
        m = report(tag, {k: scores(model, [states[p] for p in v]) for k, v in ev.items()})
        with open(args.out, "a") as f:
            f.write(json.dumps({**m, **extra, **vars(args)}) + "\n")

    for phase, lr, epochs in [("probe", 0.0, args.probe_epochs), ("finetune", args.lr, args.epochs)]:
        if phase == "finetune":
            for p in model.layers.parameters():
                p.requires_grad_(True)
        groups = [{"params": model.probe.parameters(), "lr": args.head_lr}]
        if lr:
            groups.append({"params": model.layers.parameters(), "lr": lr})
        opt = torch.optim.AdamW(groups, weight_decay=0.01)
        for epoch in range(epochs):
            model.train()
            t0 = time.time()
            for g, hidden, lengths in batches(train_s, args.batch_size, rng):
                loss = (nn.functional.binary_cross_entropy_with_logits(model(hidden, lengths), y[g], reduction="none")
                        * w[g]).sum() / w[g].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            vs = scores(model, val_s)
            vy = val_y.numpy()
            val_loss = float(np.mean(-(vy * np.log(vs + 1e-7) + (1 - vy) * np.log(1 - vs + 1e-7))))
            print(f"{phase} epoch {epoch + 1}: val loss {val_loss:.4f} val auroc {auroc(vy >= 0.5, vs):.4f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
            report_and_log(f"{phase}-{epoch + 1}", val_loss=val_loss)
            if phase == "finetune":
                snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    n = len(snapshots)
    for first, last in [(a, b) for a in range(n) for b in range(a + 1, n)]:  # weight averages of epochs first..last
        model.load_state_dict(average_weights(snapshots[first:last + 1]))
        report_and_log(f"soup-{first + 1}-{last + 1}")


if __name__ == "__main__":
    main()
