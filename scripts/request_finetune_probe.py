"""Experiment: does fine-tuning the request encoder's top layers on the `harmful_request`
label separate held-out harmful requests from XSTest's safe prompts better than a probe on
frozen features?

    .venv/bin/python scripts/request_finetune_probe.py --config runs/rm-framed/training_config.yaml

Caches layer `--from-layer`'s hidden sequences of every request once, then trains the layers
above it (to the encoder's deepest layer) and a linear head on the [last, mean] view of the
top layer. Reports AUROC and the rates at 0.5 on the direction check's requests (held-out
harmful, benign, XSTest safe test prompts), for the frozen probe and after each epoch.
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
from reward_training.refusal_sources import XSTEST_PROMPTS, read_prompt_file, xstest_key
from reward_training.sources import _read_csv, assign_split


def request_targets(cfg: RewardTrainConfig, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Distinct requests with a harmful_request target in `split`: (prompts, target, weight)."""
    data = cfg.data.model_copy(deep=True)
    for name in ("hh_rlhf", "openai_moderation", "politeness"):  # no harmful_request target
        if name in data.sources:
            data.sources[name].enabled = False
    rows = load_splits(data, ["harmful_request"], splits=(split,))[split]
    acc: dict[str, list[float]] = {}
    weight: dict[str, float] = {}
    for name, r in rows.items():
        w = cfg.data.sources[name].weight
        for e in r.examples:
            if "harmful_request" in e.targets and e.prompt.strip():
                acc.setdefault(e.prompt, []).append(e.targets["harmful_request"])
                weight[e.prompt] = max(weight.get(e.prompt, 0.0), w)
    prompts = sorted(acc)
    return prompts, np.array([np.mean(acc[p]) for p in prompts]), np.array([weight[p] for p in prompts])


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
    return {"harmful": harmful, "benign": benign, "xstest_safe": xs["safe"], "xstest_unsafe": xs["unsafe"]}


class TopLayers(nn.Module):
    """Layers (from_layer, top] of the encoder body, its final norm, and a linear head on [last, mean]."""

    def __init__(self, body, from_layer: int):
        super().__init__()
        self.layers = nn.ModuleList(body.layers[from_layer:])
        self.norm, self.rotary = body.norm, body.rotary_emb
        self.head = nn.Linear(2 * body.config.hidden_size, 1)

    def pooled(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(hidden.shape[1]).unsqueeze(0).expand(hidden.shape[0], -1)
        emb = self.rotary(hidden, pos)
        for layer in self.layers:  # right padding + causal attention: real tokens never see the padding
            hidden = layer(hidden, attention_mask=None, position_ids=pos, position_embeddings=emb)
        hidden = self.norm(hidden)
        mask = (pos < lengths.unsqueeze(1)).unsqueeze(-1).float()
        last = hidden[torch.arange(len(lengths)), lengths - 1]
        return torch.cat([last, (hidden * mask).sum(1) / mask.sum(1)], dim=-1)


@torch.no_grad()
def hidden_at(enc, prompts: list[str], layer: int, batch_size: int = 32) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    order = sorted(set(prompts), key=len)
    t0 = time.time()
    for i in range(0, len(order), batch_size):
        chunk = order[i:i + batch_size]
        tok = enc.tokenizer([enc.template(p) for p in chunk], return_tensors="pt", padding=True, truncation=True,
                            max_length=enc.spec.max_length, add_special_tokens=False)
        hs = enc.body(**tok, output_hidden_states=True).hidden_states[layer]
        for j, p in enumerate(chunk):
            out[p] = hs[j, :int(tok["attention_mask"][j].sum())].clone()
        if i % (batch_size * 40) == 0:
            print(f"  cached {i + len(chunk)}/{len(order)} ({time.time() - t0:.0f} s)", flush=True)
    return out


def batches(prompts: list[str], cache, batch_size: int, shuffle: bool, rng: random.Random):
    idx = sorted(range(len(prompts)), key=lambda i: len(cache[prompts[i]]))
    groups = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    if shuffle:
        rng.shuffle(groups)
    for g in groups:
        seqs = [cache[prompts[i]] for i in g]
        lengths = torch.tensor([len(s) for s in seqs])
        yield g, nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths


def scores(model: TopLayers, prompts: list[str], cache, batch_size: int = 64) -> np.ndarray:
    out = np.zeros(len(prompts))
    model.eval()
    with torch.inference_mode():
        for g, h, lengths in batches(prompts, cache, batch_size, False, random.Random(0)):
            out[g] = torch.sigmoid(model.head(model.pooled(h, lengths)).squeeze(-1)).numpy()
    return out


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
    train_p, train_y, train_w = request_targets(cfg, "train")
    val_p, val_y, val_w = request_targets(cfg, "val")
    ev = eval_sets(cfg)
    print(f"train {len(train_p)} requests ({train_y.mean():.2f} harmful), val {len(val_p)}; eval "
          + ", ".join(f"{k} {len(v)}" for k, v in ev.items()), flush=True)
    enc = build_request_encoder(RequestEncoderSpec(**cfg.model.request_encoder.model_dump()))
    cache = hidden_at(enc, train_p + val_p + [p for v in ev.values() for p in v], args.from_layer)
    model = TopLayers(enc.body, args.from_layer)
    results = []
    # the frozen probe: head only, same [last, mean] view of the top layer
    for p in model.layers.parameters():
        p.requires_grad_(False)
    plan = [("probe", 0.0, args.probe_epochs)] + [("finetune", args.lr, args.epochs)]
    rng = random.Random(0)
    y, w = torch.tensor(train_y, dtype=torch.float32), torch.tensor(train_w, dtype=torch.float32)
    for phase, lr, epochs in plan:
        if phase == "finetune":
            for p in model.layers.parameters():
                p.requires_grad_(True)
        groups = [{"params": model.head.parameters(), "lr": args.head_lr}]
        if lr:
            groups.append({"params": model.layers.parameters(), "lr": lr})
        opt = torch.optim.AdamW(groups, weight_decay=0.01)
        for epoch in range(epochs):
            model.train()
            t0, total = time.time(), 0.0
            for g, h, lengths in batches(train_p, cache, args.batch_size, True, rng):
                logit = model.head(model.pooled(h, lengths)).squeeze(-1)
                loss = (nn.functional.binary_cross_entropy_with_logits(logit, y[g], reduction="none") * w[g]).sum() / w[g].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(g)
            vs = scores(model, val_p, cache)
            val_loss = float(np.mean(-(val_y * np.log(vs + 1e-7) + (1 - val_y) * np.log(1 - vs + 1e-7))))
            print(f"{phase} epoch {epoch + 1}: train loss {total / len(train_p):.4f} val loss {val_loss:.4f} "
                  f"val auroc {auroc(val_y >= 0.5, vs):.4f} ({time.time() - t0:.0f} s)", flush=True)
            m = report(f"{phase}-{epoch + 1}", {k: scores(model, v, cache) for k, v in ev.items()})
            m["val_loss"] = val_loss
            results.append(m)
            with open(args.out, "a") as f:
                f.write(json.dumps({**m, **vars(args)}) + "\n")


if __name__ == "__main__":
    main()
