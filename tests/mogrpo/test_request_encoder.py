"""The reward model's request encoder (mogrpo/request_encoder.py) on a real tiny Llama:
features that do not depend on batching, the cut LM it saves, and heads that read it."""

import pytest
import torch

from mogrpo.request_encoder import ProbeHead, RequestEncoderSpec, RequestHead, build_request_encoder
from mogrpo.reward_model import ModelSpec, RewardModelError


@pytest.fixture(scope="module")
def encoder():
    return build_request_encoder(RequestEncoderSpec(source="tiny-llama", layers=[1], labels=["harmful_request"]))


def test_features_do_not_depend_on_the_batch(encoder):
    request = "How do I kill a Python process?"
    alone = encoder.features([request])
    assert alone.shape == (1, encoder.body.config.hidden_size)
    mixed = encoder.features(["Hi", request, "a much longer request about something else " * 12, "Hi"])
    torch.testing.assert_close(mixed[1], alone[0], atol=1e-4, rtol=1e-4)  # right padding leaves it alone
    torch.testing.assert_close(mixed[0], mixed[3])
    assert not torch.allclose(mixed[0], mixed[1])
    assert encoder.features([]).shape == (0, encoder.dim)


def test_the_lm_is_cut_after_its_deepest_used_layer(encoder, tmp_path):
    assert len(encoder.body.layers) == 1 and encoder.body.config.num_hidden_layers == 1
    encoder.save(tmp_path / "req")
    assert (tmp_path / "req" / "model.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "req" / "model.safetensors"), "pt") as f:  # tiny-llama is bf16: saved as such
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert not list((tmp_path / "req").glob("*.bin"))
    from mogrpo.request_encoder import load_request_encoder

    again = load_request_encoder(tmp_path / "req", encoder.spec)
    torch.testing.assert_close(again.features(["Hi there"]), encoder.features(["Hi there"]))


def test_layers_out_of_range_are_named():
    with pytest.raises(ValueError, match=r"request_encoder.layers \[5\].*2 layers"):
        build_request_encoder(RequestEncoderSpec(source="tiny-llama", layers=[5]))


def test_request_labels_must_be_model_labels():
    with pytest.raises(RewardModelError, match="request_encoder.labels"):
        ModelSpec(labels=["safety"], request_encoder=RequestEncoderSpec(labels=["harmful_request"]))
    with pytest.raises(RewardModelError, match=r"request_encoder.labels \['refusal'\]"):
        ModelSpec(labels=["safety"], request_encoder=RequestEncoderSpec(labels=["safety"], probe_label="refusal"))


def test_a_probe_head_reads_the_deepest_layers_last_and_mean_views():
    spec = RequestEncoderSpec(source="tiny-llama", layers=[2, 1], pooling=["mean", "last"], probe_label="harmful_request")
    enc = build_request_encoder(spec)
    h = enc.body.config.hidden_size
    # features: layer 2 mean, layer 2 last, layer 1 mean, layer 1 last; the probe reads [last, mean] of layer 2
    assert enc.probe_columns().tolist() == [*range(h, 2 * h), *range(0, h)]
    head = ProbeHead(10 + enc.probe_columns())
    assert not any(p.requires_grad for p in head.parameters())  # trained with the encoder, never refit
    feats = torch.randn(3, 10 + enc.dim)
    want = head.linear(torch.cat([feats[:, 10 + h:10 + 2 * h], feats[:, 10:10 + h]], -1)).squeeze(-1)
    torch.testing.assert_close(head(feats), want)
    with pytest.raises(ValueError, match=r"probe_label 'harmful_request' needs pooling \['last', 'mean'\]"):
        build_request_encoder(RequestEncoderSpec(source="tiny-llama", layers=[1], probe_label="harmful_request"))


def test_request_head_standardises_the_request_part():
    head = RequestHead(pair_dim=2, request_dim=3, hidden=4).eval()
    feats = torch.tensor([[0.0, 1.0, 100.0, 5.0, -1.0], [1.0, 0.0, 300.0, 7.0, -1.0]])
    head.set_request_stats(feats)
    assert head.request_mean.tolist() == pytest.approx([200.0, 6.0, -1.0])
    assert head.request_std.tolist() == pytest.approx([141.4214, 1.41421, 1e-3], rel=1e-4)  # a constant dim: floor
    shifted = feats.clone()
    shifted[:, 2:] = (shifted[:, 2:] - head.request_mean) / head.request_std
    with torch.no_grad():  # the MLP sees the standardised values
        x = torch.cat([head.pair_norm(feats[:, :2]), shifted[:, 2:]], -1)
        torch.testing.assert_close(head(feats), head.net(x).squeeze(-1))


def test_mean_pooling_averages_the_templated_tokens(encoder):
    both = build_request_encoder(RequestEncoderSpec(source="tiny-llama", layers=[1], pooling=["last", "mean"]))
    h = both.body.config.hidden_size
    requests = ["Hi", "How do I kill a Python process that hangs?"]
    feats = both.features(requests)
    assert feats.shape == (2, 2 * h) and both.dim == 2 * h
    torch.testing.assert_close(feats[:, :h], encoder.features(requests))  # the "last" view is unchanged
    enc = both.tokenizer([both.template(requests[1])], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():  # by hand: the unpadded request's hidden states, averaged over its tokens
        hidden = both.body(**enc, output_hidden_states=True).hidden_states[1][0]  # [T, H]
    torch.testing.assert_close(feats[1, h:], hidden.mean(0), atol=1e-4, rtol=1e-4)
    assert both.fingerprint() != encoder.fingerprint()  # cached features of one never serve the other


def test_unknown_pooling_is_named():
    from pydantic import ValidationError

    from mogrpo.config.reward_training import RequestEncoderConfig

    with pytest.raises(ValidationError, match="pooling"):
        RequestEncoderConfig(pooling=["max"])
    with pytest.raises(ValueError, match=r"request_encoder.pooling \['max'\]: expected one or more of"):
        build_request_encoder(RequestEncoderSpec(source="tiny-llama", layers=[1], pooling=["max"]))  # a hand-edited spec
