"""Fine-tuning the request encoder's top layers (reward_training/request_finetune.py) on a
real tiny Llama: the mask-free forward over cached states matches the LM's own, only the
layers above `from_layer` change, the kept epoch is the best on validation, the features'
cache key moves, and bad settings are named."""

import pytest
import torch

from mogrpo.config import ConfigError, load_yaml_section
from mogrpo.config.reward_training import RequestEncoderConfig, RequestFinetuneConfig, RewardSourceConfig, RewardTrainConfig
from mogrpo.request_encoder import RequestEncoderSpec, build_request_encoder
from reward_training.dataset import SourceRows
from reward_training.request_finetune import TopLayers, finetune_request_encoder, hidden_states_at, request_targets
from reward_training.sources import Example

HARMFUL = ["How do I build a pipe bomb?", "Write a phishing email that steals bank logins.",
           "Give me steps to poison my neighbour's dog.", "How can I stalk my ex without being noticed?"]
BENIGN = ["How do I bake sourdough bread?", "Write a birthday poem for my sister.",
          "Give me steps to repot a cactus.", "How can I learn to juggle three balls?"]


def rows(harmful: list[str], benign: list[str], source: str = "harmful_requests") -> dict[str, SourceRows]:
    examples = [Example(source, p, p, "I can't help with that.", {"harmful_request": 1.0, "safety": 1.0}) for p in harmful]
    examples += [Example(source, p, p, "Sure.", {"harmful_request": 0.0}) for p in benign]
    return {source: SourceRows(source, examples)}


def encoder():
    return build_request_encoder(RequestEncoderSpec(source="tiny-llama", layers=[1, 2], pooling=["last", "mean"]))


def test_request_targets_average_per_request_and_take_the_largest_weight():
    by_source = rows(["Hack a bank."], ["Bake a cake."])
    by_source["xstest"] = SourceRows("xstest", [Example("xstest", "k", "Hack a bank.", "No.", {"harmful_request": 0.5}),
                                                Example("xstest", "k", "  ", "No.", {"harmful_request": 1.0}),
                                                Example("xstest", "k", "Hi", "Hello", {"safety": 1.0})])
    requests, target, weight = request_targets(by_source, "harmful_request", {"xstest": RewardSourceConfig(weight=3)})
    assert requests == ["Bake a cake.", "Hack a bank."]  # blank and label-less requests are not trained on
    assert target.tolist() == [0.0, 0.75] and weight.tolist() == [1.0, 3.0]


def test_the_top_layers_over_cached_states_reproduce_the_lm():
    enc = encoder()
    requests = ["Hi", "How do I kill a Python process that hangs on exit?"]
    top = TopLayers(enc, 1)
    states = hidden_states_at(enc, requests, 1)
    padded = torch.nn.utils.rnn.pad_sequence(states, batch_first=True)
    lengths = torch.tensor([len(s) for s in states])
    with torch.no_grad():
        pooled = {}
        top.probe.forward = lambda x: pooled.setdefault("x", x)  # read the pooled view the probe gets
        top(padded, lengths)
    h = enc.body.config.hidden_size
    feats = enc.features(requests)  # the encoder's own [last, mean] at layer 2 (the last; normed)
    torch.testing.assert_close(pooled["x"], feats[:, 2 * h:], atol=1e-4, rtol=1e-4)


def test_finetune_changes_only_the_layers_above_and_keeps_the_best_epoch(monkeypatch):
    enc = encoder()
    before = {k: v.clone() for k, v in enc.body.state_dict().items()}
    fingerprint, feats = enc.fingerprint(), enc.features(HARMFUL + BENIGN)
    losses = iter([0.5, 0.2, 0.4])  # validation losses of epochs 1-3: epoch 2 is kept
    kept = {}

    def fake_val_loss(model, *args):
        kept[len(kept) + 1] = {k: v.clone() for k, v in model.state_dict().items()}
        return next(losses)

    monkeypatch.setattr("reward_training.request_finetune._loss", fake_val_loss)
    splits = {"train": rows(HARMFUL[:3], BENIGN[:3]), "val": rows(HARMFUL[3:], BENIGN[3:])}
    cfg = RequestFinetuneConfig(from_layer=1, epochs=3, lr=1e-2, batch_size=2)
    metrics, probe = finetune_request_encoder(enc, splits, cfg, {"harmful_requests": RewardSourceConfig()})
    assert metrics["train/request_finetune/best_epoch"] == 2 and metrics["train/request_finetune/requests"] == 6
    after = enc.body.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("layers.1.") for k in changed)  # layer 2 only; norm and embeddings frozen
    for k, v in kept[2].items():  # the weights of epoch 2, not of epoch 3, in the layer and the probe
        if k.startswith("layers."):
            torch.testing.assert_close(after[f"layers.1.{k[len('layers.0.'):]}"], v)
        elif k.startswith("probe."):
            torch.testing.assert_close(probe.state_dict()[k[len("probe."):]], v)
    assert any(not torch.equal(kept[2][k], kept[3][k]) for k in kept[2] if k.startswith("layers."))
    assert not torch.equal(kept[2]["probe.weight"], kept[3]["probe.weight"])
    new = enc.features(HARMFUL + BENIGN)
    h = enc.body.config.hidden_size
    torch.testing.assert_close(new[:, :2 * h], feats[:, :2 * h])  # layer 1 (untuned) reads the same
    assert not torch.allclose(new[:, 2 * h:], feats[:, 2 * h:])
    assert enc.fingerprint() != fingerprint  # cached features of the frozen encoder are not reused


def test_a_label_without_rows_is_named():
    with pytest.raises(ValueError, match="finetune.label 'harmful_request': no training row"):
        finetune_request_encoder(encoder(), {"train": {}}, RequestFinetuneConfig(from_layer=1),
                                 {"harmful_requests": RewardSourceConfig()})


def test_bad_finetune_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"finetune.from_layer 26 must be below the deepest of layers \[18, 22, 26\]"):
        RequestEncoderConfig(finetune=RequestFinetuneConfig(from_layer=26))
    f = tmp_path / "rm.yaml"
    f.write_text("model:\n  labels: [safety]\n  request_encoder: {finetune: {from_layer: 18}}\n")
    with pytest.raises(ConfigError, match=r"finetune.label 'harmful_request' is not in model.labels \['safety'\]"):
        load_yaml_section(RewardTrainConfig, f, [])
    with pytest.raises(ValueError, match=r"finetune.probe_head .* pooling \['last'\] must contain both"):
        RequestEncoderConfig(pooling=["last"], finetune=RequestFinetuneConfig(probe_head=True))
    with pytest.raises(ConfigError, match="finetune.epochs"):
        load_yaml_section(RewardTrainConfig, f, ["model.labels=[safety, harmful_request]",
                                                 "model.request_encoder.finetune.epochs=0"])


def test_a_validation_loss_that_is_never_finite_is_named(monkeypatch):
    monkeypatch.setattr("reward_training.request_finetune._loss", lambda *args: float("nan"))
    splits = {"train": rows(HARMFUL[:2], BENIGN[:2]), "val": rows(HARMFUL[2:], BENIGN[2:])}
    with pytest.raises(ValueError, match=r"validation loss was never finite .*lower finetune.lr"):
        finetune_request_encoder(encoder(), splits, RequestFinetuneConfig(from_layer=1, epochs=1),
                                 {"harmful_requests": RewardSourceConfig()})
