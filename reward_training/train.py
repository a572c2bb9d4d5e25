"""Train the multi-label reward model.

    python -m reward_training.train --config cluster_configs/reward_default.yaml [dotted.key=value ...]
    make reward

1. Read every enabled source (reward_training/sources.py) and give each row its split
   (train / val for early stopping / test for the reported metrics).
2. Encode every (prompt, response) once with the frozen encoder; features are cached per
   source, so a second run with other head settings skips this step. With
   `model.request_encoder.finetune`, the request encoder's top layers first train on a
   request label (reward_training/request_finetune.py).
3. Fit one head per label: masked pointwise loss on graded targets plus the
   Bradley-Terry loss on chosen/rejected pairs (reward_training/losses.py), AdamW,
   early stopping on the validation loss, the best epoch kept.
4. Measure the test split (reward_training/evaluate.py) and write the model folder
   atomically, with its training config and metrics.json.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
import time
from pathlib import Path

import torch

from mogrpo.config import load_yaml_section, to_yaml
from mogrpo.config.reward_training import RequestEncoderConfig, RewardTrainConfig
from reward_training import evaluate as ev
from reward_training.dataset import SourceRows, load_splits, split_counts
from reward_training.features import FeatureCache, FeatureSet, build_feature_set, encode_sources
from reward_training.losses import masked_pointwise_loss, pairwise_loss
from reward_training.request_finetune import finetune_request_encoder
from mogrpo.request_encoder import RequestEncoderSpec
from mogrpo.reward_model import ModelSpec, RewardModel, build_reward_model
from mogrpo.errors import UserError, report

log = logging.getLogger(__name__)


def spec_from_config(cfg: RewardTrainConfig) -> ModelSpec:
    m = cfg.model
    return ModelSpec(labels=list(m.labels), max_length=m.max_length, response_head_tokens=m.response_head_tokens,
                     head_hidden=m.head_hidden, head_dropout=m.head_dropout, layers=list(m.layers),
                     pooling=list(m.pooling),
                     request_encoder=request_spec(m.request_encoder) if m.request_encoder else None)


def request_spec(cfg: RequestEncoderConfig) -> RequestEncoderSpec:
    """The saved spec of a request encoder; with `finetune.probe_head`, the tuned label's head is the probe."""
    probe = cfg.finetune.label if cfg.finetune is not None and cfg.finetune.probe_head else None
    return RequestEncoderSpec(**cfg.model_dump(exclude={"finetune"}), probe_label=probe)


def batch_loss(model: RewardModel, data: FeatureSet, ex_idx: torch.Tensor, pair_idx: torch.Tensor,
               pointwise_kind: str, pairwise_weight: float) -> torch.Tensor:
    """Pointwise loss over examples `ex_idx` plus the weighted pair loss over pairs `pair_idx`."""
    loss = torch.zeros(())
    if len(ex_idx):
        logits = model.head_logits(data.x[ex_idx])  # [b, K]
        loss = loss + masked_pointwise_loss(logits, data.targets[ex_idx], data.weights[ex_idx], pointwise_kind)[0]
    if len(pair_idx) and pairwise_weight > 0:
        cols = data.pair_label[pair_idx]  # [p]
        rows = torch.arange(len(pair_idx))
        z_c = model.head_logits(data.chosen[pair_idx])[rows, cols]  # [p]
        z_r = model.head_logits(data.rejected[pair_idx])[rows, cols]  # [p]
        loss = loss + pairwise_weight * pairwise_loss(z_c, z_r)[0]
    return loss


@torch.no_grad()
def head_losses(model: RewardModel, data: FeatureSet, pointwise_kind: str, pairwise_weight: float) -> torch.Tensor:
    """Each head's loss on a whole split -> [K]: its pointwise loss plus `pairwise_weight`
    times the Bradley-Terry loss of its pairs; NaN for a head with no row in the split."""
    K = len(model.labels)
    _, per_label = masked_pointwise_loss(model.head_logits(data.x), data.targets, data.weights, pointwise_kind)  # [K]
    out = torch.where(data.weights.sum(0) > 0, per_label, torch.full((K,), float("nan")))  # [K]
    if len(data.chosen):
        z_c, z_r = model.head_logits(data.chosen), model.head_logits(data.rejected)  # [P, K]
        for k in range(K):
            mine = data.pair_label == k  # [P]
            if mine.any():
                pair = pairwise_loss(z_c[mine, k], z_r[mine, k])[0]
                out[k] = torch.nan_to_num(out[k], nan=0.0) + pairwise_weight * pair
    return out


def fit_heads(model: RewardModel, train: FeatureSet, val: FeatureSet | None, cfg: RewardTrainConfig) -> dict:
    """AdamW on the heads with early stopping per head: heads share no parameter, so each
    keeps the epoch of its own lowest validation loss, and training ends when no head has
    improved for `patience` epochs. Without validation rows, each head's train loss decides."""
    o = cfg.train
    torch.manual_seed(o.seed)
    opt = torch.optim.AdamW(model.heads.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    n, p, labels = len(train.x), len(train.chosen), model.labels
    steps = max(1, -(-n // o.batch_size)) if n else max(1, -(-p // o.pair_batch_size))
    has_val = val is not None and (len(val.x) > 0 or len(val.chosen) > 0)
    best = {label: float("inf") for label in labels}
    best_state = {label: copy.deepcopy(model.heads[label].state_dict()) for label in labels}
    best_epoch = {label: 0 for label in labels}
    history = []
    from tqdm import tqdm

    bar = tqdm(range(1, o.epochs + 1), desc="fit heads", unit="epoch", dynamic_ncols=True)
    for epoch in bar:
        model.heads.train()
        ex_perm, pair_perm = torch.randperm(n), torch.randperm(p)
        for s in range(steps):
            ex_idx = ex_perm[s * o.batch_size:(s + 1) * o.batch_size]
            start = (s * o.pair_batch_size) % max(p, 1)
            pair_idx = pair_perm[start:start + o.pair_batch_size]
            loss = batch_loss(model, train, ex_idx, pair_idx, o.pointwise_loss, o.pairwise_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.heads.eval()
        train_losses = head_losses(model, train, o.pointwise_loss, o.pairwise_weight)
        val_losses = head_losses(model, val, o.pointwise_loss, o.pairwise_weight) if has_val else train_losses
        for k, label in enumerate(labels):
            v = float(val_losses[k]) if not torch.isnan(val_losses[k]) else float(train_losses[k])
            if v < best[label] - 1e-5:
                best[label], best_epoch[label] = v, epoch
                best_state[label] = copy.deepcopy(model.heads[label].state_dict())
        history.append({"epoch": epoch, "train": dict(zip(labels, train_losses.tolist())),
                        "val": dict(zip(labels, val_losses.tolist()))})
        bar.set_postfix(val=" ".join(f"{v:.3f}" for v in val_losses.tolist()), best=max(best_epoch.values()))
        if epoch - max(best_epoch.values()) >= o.patience:
            break
    bar.close()
    for label in labels:
        model.heads[label].load_state_dict(best_state[label])
    model.heads.eval()
    log.info("heads fitted in %d epochs; best epoch per head %s", len(history), best_epoch)
    return {"best_epoch": best_epoch, "epochs_run": len(history), "best_val_loss": best, "history": history}


def split_metrics(model: RewardModel, data: FeatureSet, rows: dict[str, SourceRows]) -> dict[str, float]:
    """Metrics of one split from its cached features (the same numbers `evaluate` gets by scoring)."""
    examples = [e for r in rows.values() for e in r.examples]
    pairs = [pr for r in rows.values() for pr in r.pairs]
    ex = model.scores_from_features(data.x)
    ch, rj = model.scores_from_features(data.chosen), model.scores_from_features(data.rejected)
    return ev.compute_metrics(examples, ex, pairs, ch, rj)


def train(cfg: RewardTrainConfig, splits: dict[str, dict[str, SourceRows]] | None = None) -> Path:
    """Steps 1-4 of the module docstring; returns the written model folder."""
    t0 = time.time()
    torch.set_num_threads(cfg.omp_threads)
    spec = spec_from_config(cfg)
    if splits is None:  # 1. data
        splits = load_splits(cfg.data, spec.labels, cfg.train.seed)
    counts = split_counts(splits)
    for name, c in counts.items():
        log.info("split %-20s %s", name, " ".join(f"{s}={c.get(s, 0)}" for s in ("train", "val", "test")))
    model = build_reward_model(cfg.model.encoder, spec, seed=cfg.train.seed)
    if torch.cuda.is_available():  # encoding is the costly step: on a GPU it takes seconds; heads stay on the CPU
        model.encoder.to("cuda")
        if model.request_encoder is not None:
            model.request_encoder.to("cuda")
    tuned: dict = {}
    tune = cfg.model.request_encoder.finetune if cfg.model.request_encoder else None
    if tune is not None:  # 2a. the request encoder's top layers, on a request label
        tuned, probe = finetune_request_encoder(model.request_encoder, splits, tune, cfg.data.sources, cfg.train.seed)
        if spec.probe_label is not None:  # the probe is that label's head; fit_heads leaves it as it is
            model.heads[spec.probe_label].linear.load_state_dict(probe.state_dict())
    cache = FeatureCache.from_setting(cfg.feature_cache)
    feats = encode_sources(model, splits, cache, cfg.encode_batch_size)  # 2. features
    t_feat = time.time() - t0
    sets = {s: build_feature_set(splits[s], feats, spec.labels, cfg.data.sources) for s in splits}
    if not len(sets["train"].x) and not len(sets["train"].chosen):
        raise ValueError("no training rows: every source is disabled, empty, or held out")
    model.set_request_stats(sets["train"].x)
    fit = fit_heads(model, sets["train"], sets.get("val"), cfg)  # 3. heads
    metrics: dict = {}
    if "test" in splits and splits["test"]:  # 4. held-out metrics
        metrics.update(split_metrics(model, sets["test"], splits["test"]))
        metrics = {f"test/{k}" if k.startswith("n/") else k: v for k, v in metrics.items()}
    if "val" in splits and splits["val"]:
        metrics.update({f"val/{k}": v for k, v in split_metrics(model, sets["val"], splits["val"]).items()})
    metrics.update({**tuned, **{f"train/best_epoch/{k}": v for k, v in fit["best_epoch"].items()},
                    **{f"train/best_val_loss/{k}": round(v, 5) if math.isfinite(v) else None
                       for k, v in fit["best_val_loss"].items()},
                    "train/epochs_run": fit["epochs_run"], "train/feature_seconds": round(t_feat, 1),
                    "train/seconds": round(time.time() - t0, 1), "train/pairs_truncated": model.pairs_truncated,
                    "train/pairs_encoded": model.pairs_seen,
                    "data/rows": {name: c for name, c in counts.items()}})
    out = model.save(cfg.output, train_config_yaml=to_yaml(cfg), metrics=metrics)
    ev.print_metrics({k: v for k, v in metrics.items() if not isinstance(v, dict) and "/" in k and
                      not k.startswith(("val/", "train/"))})
    log.info("wrote %s in %.0f s (features %.0f s)", out, time.time() - t0, t_feat)
    return out


QUICK_LIMIT = 150  # rows per source for the short built-in fit


def quick_config(output: str | Path, data_dir: Path) -> RewardTrainConfig:
    """The short fit: every default source capped at QUICK_LIMIT rows, the policy answering
    QUICK_LIMIT harmful and as many benign requests once each (about half a minute of vLLM);
    smaller batches and a higher learning rate, so the few rows still give a few hundred
    optimiser steps."""
    cfg = RewardTrainConfig(output=str(output))
    cfg.data.data_dir = str(data_dir)
    for source in cfg.data.sources.values():
        source.limit = QUICK_LIMIT
    answers = cfg.data.policy_answers
    answers.harmful_prompts, answers.benign_prompts, answers.samples, answers.xstest = QUICK_LIMIT, QUICK_LIMIT, 1, False
    cfg.train.epochs, cfg.train.patience, cfg.train.batch_size, cfg.train.lr = 40, 5, 64, 1e-3
    return cfg


def fit_quick(output: str | Path, data_dir: str | Path | None = None) -> Path:
    """Fit a small reward model in about a minute: on a capped subset of the shared data
    when its folder exists, else on the hand-written built-in examples."""
    from reward_training.builtin_examples import builtin_examples
    from reward_training.dataset import default_data_dir, resolve_data_dir

    data = resolve_data_dir(data_dir) if data_dir is not None else default_data_dir()
    if data.is_dir():
        log.info("fitting a quick reward model on a subset of %s", data)
        return train(quick_config(output, data))
    log.warning("shared data not found at %s: fitting a quick reward model on the built-in examples "
                "(weak; train the real one with `make reward`)", data)
    cfg = quick_config(output, data)
    cfg.train.epochs, cfg.train.batch_size = 100, 16
    return train(cfg, splits={"train": {"builtin": SourceRows("builtin", builtin_examples())}})


def ensure_reward_model(path: str | Path, fit_if_missing: bool = True, data_dir: str | Path | None = None) -> Path:
    """Return `path` if it holds a reward model; else fit one there (if allowed) and return it."""
    from mogrpo.atomic import file_lock
    from mogrpo.reward_model import SPEC_FILE, find_reward_model

    found = find_reward_model(path, fit_if_missing)
    if found is not None:
        return found
    path = Path(path).expanduser()
    with file_lock(path):  # one fitter per folder across processes
        if not (path / SPEC_FILE).is_file():
            fit_quick(path, data_dir)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML of a RewardTrainConfig (cluster_configs/reward_default.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.lr=3e-4 output=runs/rm2")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        train(load_yaml_section(RewardTrainConfig, args.config, args.overrides))
    except UserError as err:
        return report(err, args.debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
