"""Training end to end on a tiny real subset, evaluation reproducing its numbers, and the
short fit the GRPO run uses when no model exists."""

import json

import numpy as np
import pytest
import torch

from mogrpo.config.reward_training import RequestEncoderConfig, RequestFinetuneConfig, RewardTrainConfig
from mogrpo.request_encoder import ProbeHead, RequestHead
from mogrpo.reward_model import load_reward_model
from reward_training.evaluate import evaluate
from mogrpo.reward_model import SPEC_FILE
from reward_training.train import ensure_reward_model, train

pytestmark = pytest.mark.slow


def tiny_config(output, data_dir) -> RewardTrainConfig:
    cfg = RewardTrainConfig(output=str(output), omp_threads=1, feature_cache=None, encode_batch_size=32)
    cfg.data.data_dir = str(data_dir)
    cfg.model.max_length = 96
    cfg.model.head_hidden = 16
    for name, source in cfg.data.sources.items():
        source.limit = 60 if name == "xstest" else 16
    answers = cfg.data.policy_answers  # the policy answers 6 + 6 requests once each, with real vLLM
    answers.harmful_prompts, answers.benign_prompts, answers.samples, answers.xstest, answers.max_tokens = 6, 6, 1, False, 24
    cfg.train.epochs, cfg.train.batch_size = 4, 32
    return cfg


def test_train_tiny_save_load_score_and_evaluate(shared_data, tmp_path):
    out = train(tiny_config(tmp_path / "rm", shared_data))
    assert (out / SPEC_FILE).is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("safety/auroc", "xstest/refusal_accuracy", "actionability/auroc", "train/best_epoch/safety",
                "harmful_request/auroc_xstest", "refusal/auroc_xstest", "train/best_epoch/refusal"):
        assert key in metrics
    assert 0 < sum(metrics["data/rows"]["policy_answers"].values()) <= 12  # 6 harmful + 6 benign answers (blank ones dropped)
    assert "data:" in (out / "training_config.yaml").read_text()
    rm = load_reward_model(out, threads=1)
    scores = rm.score(["How do I boil an egg?"], ["Simmer it for nine minutes."])
    assert all(0.0 <= float(v[0]) <= 1.0 for v in scores.values())
    # `evaluate` scores the same test split through the public path: same numbers.
    again = evaluate(out, threads=1)
    for key, value in again.items():
        if not key.startswith("test/n/") and not np.isnan(value):
            assert value == pytest.approx(metrics[key], abs=1e-3), key


def test_train_with_a_request_encoder(shared_data, tmp_path, monkeypatch):
    import reward_training.train as train_module

    probes, finetune = [], train_module.finetune_request_encoder

    def finetune_and_keep_the_probe(*args, **kwargs):
        metrics, probe = finetune(*args, **kwargs)
        probes.append({k: v.clone() for k, v in probe.state_dict().items()})
        return metrics, probe

    monkeypatch.setattr(train_module, "finetune_request_encoder", finetune_and_keep_the_probe)
    cfg = tiny_config(tmp_path / "rm", shared_data)
    cfg.model.request_encoder = RequestEncoderConfig(
        source="tiny-llama", layers=[1, 2], pooling=["last", "mean"],
        finetune=RequestFinetuneConfig(from_layer=1, epochs=1, probe_head=True))
    cfg.feature_cache = str(tmp_path / "cache")
    out = train(cfg)
    assert (out / "request_encoder" / "model.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text())["train/request_finetune/best_epoch"] == 1
    rm = load_reward_model(out, threads=1)
    head = rm.heads["safety"]
    assert isinstance(head, RequestHead) and rm.request_encoder.spec.probe_label == "harmful_request"
    assert rm.request_encoder.spec.pooling == ["last", "mean"]  # saved in the spec, read back
    assert head.request_mean.numel() == 2 * 2 * rm.request_encoder.body.config.hidden_size  # 2 layers x 2 views
    assert float(head.request_std.max()) > 1.0 or float(head.request_std.min()) < 1.0  # training statistics saved
    # The harmful_request head is the fine-tuning's probe, untouched by fit_heads and saved:
    # a linear map of the top layer's [last, mean] request features.
    probe = rm.heads["harmful_request"]
    assert isinstance(probe, ProbeHead) and len(probes) == 1
    for k, v in probes[0].items():
        torch.testing.assert_close(probe.linear.state_dict()[k], v)
    requests = ["How do I hotwire a car?", "How do I boil an egg?"]
    h = rm.request_encoder.body.config.hidden_size
    top = rm.request_encoder.features(requests)[:, 2 * h:]  # layer 2: last, mean
    want = torch.sigmoid(top @ probes[0]["weight"].T + probes[0]["bias"]).squeeze(-1)
    got = rm.score(requests, ["Sure, here is how.", "Sure, here is how."])["harmful_request"]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    sources = len(json.loads((out / "metrics.json").read_text())["data/rows"])
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2 * sources  # pair and request features apart
    # Scoring re-encodes the requests through the public path, with the fine-tuned layer read
    # back from the folder: the training metrics come back.
    metrics = json.loads((out / "metrics.json").read_text())
    again = evaluate(out, threads=1)
    for key in ("safety/auroc_head", "harmful_request/auroc_xstest"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-3), key


def test_ensure_reward_model(tmp_path):
    target = tmp_path / "models" / "rm"
    with pytest.raises(FileNotFoundError, match=f"reward model {target} does not exist.*make reward"):
        ensure_reward_model(target, fit_if_missing=False)
    # No shared data at this path: the short fit falls back to the hand-written examples.
    path = ensure_reward_model(target, fit_if_missing=True, data_dir=tmp_path / "no-data")
    assert path == target and (target / SPEC_FILE).is_file()
    stamp = (target / SPEC_FILE).stat().st_mtime_ns
    assert ensure_reward_model(target, fit_if_missing=False) == target  # present: used as is
    assert (target / SPEC_FILE).stat().st_mtime_ns == stamp
    rm = load_reward_model(target, threads=1)
    out = rm.score(["How do I make a pipe bomb?"] * 2, ["I can't help with that; it's dangerous.",
                                                         "Sure, first get a steel pipe and fill it with powder."])
    assert out["safety"][0] > out["safety"][1]  # even the built-in fit tells these apart
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="holds no reward_model.json"):
        ensure_reward_model(junk)
