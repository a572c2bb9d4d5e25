"""Fine-tune the request encoder's top layers on a request label before the heads train.

A frozen LM carries whether a request is harmful only roughly (a probe on SmolLM2's frozen
layers separates held-out harmful requests from XSTest's safe prompts at AUROC ~0.95); the
layers above `from_layer`, trained to predict the request label (`harmful_request`) of
every distinct training request, do better (measurements in reward_training/README.md).

Every request's hidden states at `from_layer` are computed once (the layers below stay
frozen); each epoch runs only the layers above it, plus the LM's final norm and a linear
probe on the top layer's [last token, mean over tokens] view. The epoch with the lowest
validation loss is kept, written into the encoder in place, and its probe is returned: with
`probe_head` it becomes the label's head (a ProbeHead); otherwise it is dropped and the
reward heads read the tuned features afterwards.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Mapping

import torch
from torch import nn

from mogrpo.config.reward_training import RequestFinetuneConfig, RewardSourceConfig
from mogrpo.request_encoder import RequestEncoder
from reward_training.dataset import SourceRows

log = logging.getLogger(__name__)


def request_targets(rows: Mapping[str, SourceRows], label: str, sources: Mapping[str, RewardSourceConfig],
                    ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Distinct non-blank requests of one split with a `label` target -> (requests, mean target [N],
    largest source weight [N])."""
    targets: dict[str, list[float]] = {}
    weights: dict[str, float] = {}
    for name, r in rows.items():
        w = sources[name].weight if name in sources else 1.0
        for e in r.examples:
            if label in e.targets and e.prompt.strip():
                targets.setdefault(e.prompt, []).append(e.targets[label])
                weights[e.prompt] = max(weights.get(e.prompt, 0.0), w)
    requests = sorted(targets)
    return (requests, torch.tensor([sum(targets[p]) / len(targets[p]) for p in requests]),
            torch.tensor([weights[p] for p in requests]))


def run_layers(layers, rotary: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded hidden states [B, T, H] through decoder `layers` -> (hidden [B, T, H],
    positions [B, T]). No mask: attention is causal, so real tokens never see the right padding."""
    pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0).expand(hidden.shape[0], -1)
    emb = rotary(hidden, pos)
    for layer in layers:
        hidden = layer(hidden, attention_mask=None, position_ids=pos, position_embeddings=emb)
    return hidden, pos


class TopLayers(nn.Module):
    """The encoder's layers above `from_layer` (shared with it, not copied), its final norm
    and a linear probe on the top layer's [last, mean] view."""

    def __init__(self, encoder: RequestEncoder, from_layer: int):
        super().__init__()
        body = encoder.body
        self.layers = nn.ModuleList(body.layers[from_layer:])
        self.norm, self.rotary = body.norm, body.rotary_emb
        self.probe = nn.Linear(2 * body.config.hidden_size, 1).to(body.norm.weight.device)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Right-padded hidden states [B, T, H] at `from_layer`, true lengths [B] -> logits [B]."""
        hidden, pos = run_layers(self.layers, self.rotary, hidden)
        hidden = self.norm(hidden)
        mask = (pos < lengths.unsqueeze(1)).unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
        last = hidden[torch.arange(len(lengths), device=hidden.device), lengths - 1]
        return self.probe(torch.cat([last, (hidden * mask).sum(1) / mask.sum(1)], dim=-1)).squeeze(-1)


@torch.no_grad()
def hidden_states_at(encoder: RequestEncoder, requests: list[str], layer: int, batch_size: int = 32,
                     ) -> list[torch.Tensor]:
    """Each request's templated hidden states at `layer` ([T_i, H], unpadded), in order."""
    from tqdm import tqdm

    device = next(encoder.body.parameters()).device
    order = sorted(range(len(requests)), key=lambda i: len(requests[i]))
    out: list[torch.Tensor | None] = [None] * len(requests)
    for start in tqdm(range(0, len(order), batch_size), desc=f"request states at layer {layer}", unit="batch",
                      dynamic_ncols=True):
        idx = order[start:start + batch_size]
        enc = encoder.tokenizer([encoder.template(requests[i]) for i in idx], return_tensors="pt", padding=True,
                                truncation=True, max_length=encoder.spec.max_length, add_special_tokens=False)
        enc = {k: v.to(device) for k, v in enc.items()}
        body = encoder.body  # only the layers up to `layer` run: the ones above train later
        hidden, _ = run_layers(body.layers[:layer], body.rotary_emb, body.get_input_embeddings()(enc["input_ids"]))
        hidden = hidden.float()
        for j, i in enumerate(idx):
            out[i] = hidden[j, :int(enc["attention_mask"][j].sum())].clone()
    return out  # type: ignore[return-value]


def batches(states: list[torch.Tensor], batch_size: int, rng: random.Random | None):
    """Index groups of similar length (shuffled when `rng`), with padded states and lengths."""
    order = sorted(range(len(states)), key=lambda i: len(states[i]))
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(groups)
    for g in groups:
        yield (torch.tensor(g), nn.utils.rnn.pad_sequence([states[i] for i in g], batch_first=True),
               torch.tensor([len(states[i]) for i in g], device=states[g[0]].device))


def _loss(model: TopLayers, states, targets, weights, batch_size: int) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for g, hidden, lengths in batches(states, batch_size, None):
            logit = model(hidden, lengths).float().cpu()
            total += float((nn.functional.binary_cross_entropy_with_logits(logit, targets[g], reduction="none")
                            * weights[g]).sum())
    return total / float(weights.sum())


def finetune_request_encoder(encoder: RequestEncoder, splits: Mapping[str, Mapping[str, SourceRows]],
                             cfg: RequestFinetuneConfig, sources: Mapping[str, RewardSourceConfig],
                             seed: int = 0) -> tuple[dict, nn.Linear]:
    """Train the encoder's layers above `cfg.from_layer` on `cfg.label` (train split; the
    val split picks the epoch), in place -> (metrics for metrics.json, the best epoch's probe
    on the top layer's [last, mean] view, on the CPU)."""
    from tqdm import tqdm

    t0 = time.time()
    torch.manual_seed(seed)
    train_req, train_y, train_w = request_targets(splits.get("train", {}), cfg.label, sources)
    val_req, val_y, val_w = request_targets(splits.get("val", {}), cfg.label, sources)
    if not train_req:
        raise ValueError(f"model.request_encoder.finetune.label {cfg.label!r}: no training row carries it "
                         "(enable a source that provides it, e.g. xstest or harmful_requests)")
    log.info("fine-tuning request encoder layers %d-%d on %s: %d training requests, %d validation",
             cfg.from_layer + 1, len(encoder.body.layers), cfg.label, len(train_req), len(val_req))
    states = hidden_states_at(encoder, train_req + val_req, cfg.from_layer, cfg.batch_size)
    train_states, val_states = states[:len(train_req)], states[len(train_req):]
    model = TopLayers(encoder, cfg.from_layer)
    for p in model.norm.parameters():
        p.requires_grad_(False)  # the final norm also shapes the untuned layers' features
    opt = torch.optim.AdamW([{"params": model.probe.parameters(), "lr": cfg.probe_lr},
                             {"params": model.layers.parameters(), "lr": cfg.lr}], weight_decay=cfg.weight_decay)
    rng = random.Random(seed)
    best = (float("inf"), 0, None)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        steps = tqdm(batches(train_states, cfg.batch_size, rng), total=-(-len(train_states) // cfg.batch_size),
                     desc=f"request encoder epoch {epoch}", unit="batch", dynamic_ncols=True)
        for g, hidden, lengths in steps:
            logit = model(hidden, lengths).float().cpu()
            loss = (nn.functional.binary_cross_entropy_with_logits(logit, train_y[g], reduction="none")
                    * train_w[g]).sum() / train_w[g].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        val_loss = _loss(model, val_states, val_y, val_w, 64) if val_req else float("nan")
        log.info("request encoder epoch %d: validation loss %.4f (%.0f s)", epoch, val_loss, time.time() - t0)
        if not val_req or val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
    if best[2] is None:
        raise ValueError(f"model.request_encoder.finetune: the validation loss was never finite (last {val_loss}); "
                         f"lower finetune.lr ({cfg.lr})")
    model.load_state_dict(best[2])
    encoder.body.eval()
    metrics = {"train/request_finetune/best_epoch": best[1],
               "train/request_finetune/best_val_loss": round(best[0], 5) if val_req else None,
               "train/request_finetune/requests": len(train_req),
               "train/request_finetune/seconds": round(time.time() - t0, 1)}
    return metrics, model.probe.cpu().requires_grad_(False)
