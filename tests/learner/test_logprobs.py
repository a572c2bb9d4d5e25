"""Chunked token log-probs against the naive log-softmax, and response alignment on a tiny Llama."""

from __future__ import annotations

import math
import types

import pytest
import torch
import transformers

from learner.logprobs import response_logprobs, response_mask, token_logprobs


def naive(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return (logits.float() / temperature).log_softmax(-1).gather(-1, tokens[..., None])[..., 0]


def test_token_logprobs_hand_values():
    # logits [0, ln 2, ln 3] -> softmax [1, 2, 3] / 6: token 2 -> ln(1/2), token 0 -> ln(1/6)
    logits = torch.tensor([[[0.0, math.log(2), math.log(3)]] * 2])  # [1, 2, 3]
    out = token_logprobs(logits, torch.tensor([[2, 0]]))
    torch.testing.assert_close(out, torch.tensor([[math.log(0.5), math.log(1 / 6)]]))
    # temperature 2 -> logits [0, ln sqrt2, ln sqrt3] -> token 2: ln(1.7321 / 4.1463) = -0.8729
    out = token_logprobs(logits, torch.tensor([[2, 2]]), temperature=2.0)
    expected = math.log(math.sqrt(3) / (1 + math.sqrt(2) + math.sqrt(3)))
    torch.testing.assert_close(out, torch.tensor([[expected, expected]]))
    torch.testing.assert_close(out[0, 0], torch.tensor(-0.8729016))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_size", [1, 4, 7, 1000])
def test_token_logprobs_equals_naive(dtype, chunk_size):
    # [3, 5, 50] logits: 15 positions, chunk sizes that divide, don't divide, and exceed it
    torch.manual_seed(0)
    logits = (torch.randn(3, 5, 50) * 3).to(dtype).requires_grad_()
    tokens = torch.randint(0, 50, (3, 5))
    upstream = torch.randn(3, 5)

    out = token_logprobs(logits, tokens, temperature=0.7, chunk_size=chunk_size)
    (grad,) = torch.autograd.grad((out * upstream).sum(), logits)
    ref = naive(logits, tokens, temperature=0.7)
    (ref_grad,) = torch.autograd.grad((ref * upstream).sum(), logits)

    assert out.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad)


def test_token_logprobs_gradcheck():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 6, (2, 3))
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, tokens, 1.3, chunk_size=4), (logits,))


def test_token_logprobs_saves_no_float32_copy():
    # for backward, the naive path keeps a float32 [N, V] log-softmax (2x the bf16 logits);
    # the chunked one keeps the logits themselves plus per-row scalars
    logits = torch.randn(64, 1000).bfloat16().requires_grad_()
    tokens = torch.randint(0, 1000, (64,))

    def saved_bytes(fn):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.nbytes) or t, lambda t: t):
            fn()
        return sum(sizes)

    assert saved_bytes(lambda: token_logprobs(logits, tokens)) <= logits.nbytes + 64 * (8 + 4)
    assert saved_bytes(lambda: naive(logits, tokens)) >= 2 * logits.nbytes


def test_response_mask():
    # output position t scores token t + 1, so columns stand for tokens 1..4
    # row 0: response starts at token 2, token 4 is padding -> [F, T, T, F]
    # row 1: response starts at token 3, no padding          -> [F, F, T, T]
    attention_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    mask = response_mask(attention_mask, torch.tensor([2, 3]))
    assert mask.tolist() == [[False, True, True, False], [False, False, True, True]]


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                                      initializer_range=0.3)
    return transformers.LlamaForCausalLM(config).eval()


def unpadded_expected(model, prompt: list[int], response: list[int], temperature: float) -> torch.Tensor:
    """Log-probs of the response tokens, from one unpadded row and the full log-softmax."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]  # [P + R, V]
    logp = (logits / temperature).log_softmax(-1)  # [P + R, V]
    p = len(prompt)
    return torch.stack([logp[p - 1 + j, tok] for j, tok in enumerate(response)])  # [R]


ROWS = [([3, 4, 5], [10, 11, 12, 13]), ([6, 7, 8, 9, 2], [14, 15]), ([1, 2], [16, 17, 18])]  # (prompt, response)


def test_response_logprobs_alignment_right_padding(tiny_llama):
    # rows = prompt, response, right padding (pad id 0); response_start = prompt length
    length = max(len(p) + len(r) for p, r in ROWS)  # 7
    input_ids = torch.zeros(3, length, dtype=torch.long)
    attention_mask = torch.zeros(3, length, dtype=torch.long)
    for i, (p, r) in enumerate(ROWS):
        input_ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        attention_mask[i, : len(p) + len(r)] = 1
    start = torch.tensor([len(p) for p, _ in ROWS])

    with torch.no_grad():
        out = response_logprobs(tiny_llama, input_ids, attention_mask, start, temperature=0.7)
    assert out.shape == (3, length - 1)
    mask = response_mask(attention_mask, start)
    for i, (p, r) in enumerate(ROWS):
        # response token j sits at input position len(p) + j, scored at output position len(p) - 1 + j
        torch.testing.assert_close(out[i, len(p) - 1 : len(p) - 1 + len(r)], unpadded_expected(tiny_llama, p, r, 0.7))
        assert mask[i].nonzero().flatten().tolist() == list(range(len(p) - 1, len(p) - 1 + len(r)))
    assert (out[~mask] == 0).all()


def test_response_logprobs_left_padded_prompts(tiny_llama):
    # prompts left-padded to 5 tokens, responses right-padded: position ids come from the mask
    input_ids = torch.zeros(3, 9, dtype=torch.long)
    attention_mask = torch.zeros(3, 9, dtype=torch.long)
    for i, (p, r) in enumerate(ROWS):
        input_ids[i, 5 - len(p) : 5 + len(r)] = torch.tensor(p + r)
        attention_mask[i, 5 - len(p) : 5 + len(r)] = 1
    start = torch.full((3,), 5)

    with torch.no_grad():
        out = response_logprobs(tiny_llama, input_ids, attention_mask, start, temperature=0.7)
    for i, (p, r) in enumerate(ROWS):
        torch.testing.assert_close(out[i, 4 : 4 + len(r)], unpadded_expected(tiny_llama, p, r, 0.7),
                                   rtol=1e-5, atol=1e-5)


class Recorder(torch.nn.Module):
    """Wraps a model; records the logits_to_keep it was given, or hides it from the model."""

    def __init__(self, model, pass_keep: bool):
        super().__init__()
        self.model, self.pass_keep, self.calls = model, pass_keep, []

    def forward(self, logits_to_keep=0, **kwargs):
        self.calls.append(logits_to_keep)
        out = self.model(**kwargs, logits_to_keep=logits_to_keep if self.pass_keep else 0)
        return types.SimpleNamespace(logits=out.logits)


def test_response_logprobs_skips_prompt_positions_and_gradients_flow(tiny_llama):
    # shortest prompt is 2 tokens -> logits from position 1 on: keep = 7 - 1 = 6 of 7 positions;
    # a model that ignores logits_to_keep gives the same values and gradients
    input_ids = torch.tensor([[3, 4, 5, 10, 11, 12, 0], [1, 2, 16, 17, 18, 0, 0]])
    attention_mask = (input_ids != 0).long()
    start = torch.tensor([3, 2])
    results = []
    for pass_keep in (True, False):
        model = Recorder(tiny_llama, pass_keep)
        tiny_llama.zero_grad()
        out = response_logprobs(model, input_ids, attention_mask, start)
        out.sum().backward()
        assert model.calls == [6]
        results.append((out.detach(), tiny_llama.lm_head.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    assert results[0][1].abs().sum() > 0 and torch.isfinite(results[0][1]).all()


def test_response_logprobs_rejects_bad_starts(tiny_llama):
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="response_start"):
        response_logprobs(tiny_llama, ids, torch.ones_like(ids), torch.tensor([0]))
    with pytest.raises(ValueError, match="response_start"):
        response_logprobs(tiny_llama, ids, torch.ones_like(ids), torch.tensor([1, 1]))
