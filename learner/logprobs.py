"""Log-probabilities of sampled tokens without a full-vocabulary log-softmax in memory.

On CPU the learner's memory peak is the vocabulary dimension: for SmolLM2 (V = 49,152) a
micro-batch of 32 x 110 positions has 173 M logits, 0.7 GB in float32, and the naive
`logits.float().log_softmax(-1).gather(...)` holds a float32 copy plus the float32
log-softmax (kept for backward) at once. `token_logprobs` walks the rows in chunks and
keeps only per-row scalars; its backward recomputes each chunk's softmax from the logits
(which already exist) instead of keeping a float32 copy.
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_CHUNK_ROWS = 1024
"""Rows (positions) per chunk: 1024 x 49,152 float32 = 192 MiB of scratch for SmolLM2."""


def _scaled(logits: Tensor, dtype: torch.dtype, temperature: float) -> Tensor:
    """logits upcast to `dtype` and divided by the temperature; at temperature 1 the division,
    a pass over a vocabulary-sized chunk, is skipped (4% of a SmolLM2 train step on CPU)."""
    x = logits.to(dtype)
    return x / temperature if temperature != 1.0 else x


class _TokenLogprobs(torch.autograd.Function):
    """log_softmax(logits / T)[n, tokens[n]] for flat rows n, chunked in forward and backward.

    Forward, per chunk of rows:   x = upcast(logits) / T;  out = x[token] - logsumexp(x)
    Backward, per chunk of rows:  d out / d logits = (onehot(token) - softmax(x)) / T
    Saved for backward: the logits (as given, e.g. bf16), the tokens and one logsumexp per row.
    upcast: to float32 for half-precision logits; float64 stays float64 (gradient checks).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, tokens: Tensor, temperature: float, chunk_rows: int) -> Tensor:
        n = logits.shape[0]  # logits [N, V], tokens [N]
        dtype = torch.promote_types(logits.dtype, torch.float32)
        out = torch.empty(n, dtype=dtype, device=logits.device)  # [N]
        lse = torch.empty(n, dtype=dtype, device=logits.device)  # [N]
        for start in range(0, n, chunk_rows):
            rows = slice(start, start + chunk_rows)
            x = _scaled(logits[rows], dtype, temperature)  # [n, V] float32 scratch
            lse[rows] = torch.logsumexp(x, dim=-1)  # [n]
            out[rows] = x.gather(-1, tokens[rows, None]).squeeze(-1) - lse[rows]  # [n]
        ctx.save_for_backward(logits, tokens, lse)
        ctx.temperature, ctx.chunk_rows = temperature, chunk_rows
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        logits, tokens, lse = ctx.saved_tensors  # [N, V], [N], [N]
        temperature, chunk_rows = ctx.temperature, ctx.chunk_rows
        grad_logits = torch.empty_like(logits)  # [N, V]
        for start in range(0, logits.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            x = _scaled(logits[rows], lse.dtype, temperature)  # [n, V]
            g = grad_out[rows, None].to(lse.dtype)  # [n, 1]
            grad = -torch.exp(x - lse[rows, None]) * g  # [n, V] -softmax * g
            grad.scatter_add_(-1, tokens[rows, None], g)  # [n, V] + onehot * g
            grad_logits[rows] = grad / temperature if temperature != 1.0 else grad
        return grad_logits, None, None, None


def token_logprobs(
    logits: Tensor,
    tokens: Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
) -> Tensor:
    """log softmax(logits / temperature) gathered at `tokens`, chunked over positions.

    Equals `(logits.float() / temperature).log_softmax(-1).gather(-1, tokens[..., None])[..., 0]`
    and is differentiable in `logits`, but never holds more than `chunk_size` rows of
    float32 vocabulary-sized scratch (forward or backward); the logsumexp is in float32
    for half-precision logits (float64 logits stay float64).

    The temperature must be the one the sampler used, so that these are the log-probs of
    the distribution the tokens were drawn from (and vLLM must return processed log-probs
    for its behaviour log-probs to match).

    Args:
        logits: [B, L, V] (or [N, V]) logits, any float dtype; contiguous, or the flattening
            to [B*L, V] copies them.
        tokens: [B, L] (or [N]) token ids to score, int64.
        temperature: divide the logits by this before the softmax (> 0).
        chunk_size: positions per chunk.

    Returns:
        [B, L] (or [N]) log-probs, float32 (float64 for float64 logits).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(f"logits {list(logits.shape)} and tokens {list(tokens.shape)} disagree")
    flat_logits = logits.reshape(-1, logits.shape[-1])  # [B*L, V]
    flat_tokens = tokens.reshape(-1).long()  # [B*L]
    out = _TokenLogprobs.apply(flat_logits, flat_tokens, float(temperature), int(chunk_size))  # [B*L]
    return out.view(tokens.shape)  # [B, L]


def response_mask(attention_mask: Tensor, response_start: Tensor) -> Tensor:
    """Mask of the response tokens in the coordinates of `response_logprobs`' output.

    Position t of the output scores input_ids[:, t + 1], so the mask there is 1 when token
    t + 1 is a real token (attention_mask) at or after the response's first token.

    Args:
        attention_mask: [B, L] 1 for real tokens, 0 for padding.
        response_start: [B] index in input_ids of each row's first response token.

    Returns:
        [B, L - 1] bool.
    """
    positions = torch.arange(1, attention_mask.shape[1], device=attention_mask.device)  # [L-1] = t + 1
    after_start = positions[None, :] >= response_start[:, None]  # [B, L-1]
    return attention_mask[:, 1:].bool() & after_start  # [B, L-1]


def response_logprobs(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_start: Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
) -> Tensor:
    """Log-probs of the response tokens of prompt+response rows under a causal LM.

    Alignment: output[:, t] = log p(input_ids[:, t + 1] | input_ids[:, :t + 1]), for
    t = 0 .. L-2, so a row whose response occupies input_ids[s : s + R] has its response
    log-probs at output[s - 1 : s - 1 + R]. Positions that are not response tokens (the
    prompt, padding) hold 0; `response_mask(attention_mask, response_start)` marks the
    response positions. A response of R tokens has R log-probs: the first one is scored
    from the last prompt token, and nothing is scored after the last response token.

    Padding: rows are right-padded (prompt, response, then padding) or have left-padded
    prompts; position ids are taken from the attention mask (cumsum - 1) so both give the
    positions the sampler used.

    Prompt positions: the model is asked for logits only from position min(response_start) - 1
    on (`logits_to_keep`, which every Hugging Face causal LM accepts), so the lm_head and
    log-softmax skip the prompt prefix shared by the batch's shortest prompt. A model that
    ignores `logits_to_keep` returns all positions, which are all scored: same result, more work.

    Args:
        model: a causal LM called as model(input_ids=, attention_mask=, position_ids=,
            use_cache=False, logits_to_keep=) returning an object with `.logits` [B, K, V]
            (a transformers model, or one wrapped by peft or DeepSpeed).
        input_ids: [B, L] prompt + response token ids.
        attention_mask: [B, L] 1 for real tokens, 0 for padding.
        response_start: [B] index of each row's first response token (>= 1).
        temperature: the sampling temperature.
        chunk_size: positions per chunk of `token_logprobs`.

    Returns:
        [B, L - 1] float32 (float64 for a float64 model), aligned as above, zero outside the response.
    """
    if input_ids.shape != attention_mask.shape or input_ids.dim() != 2:
        raise ValueError(f"input_ids {list(input_ids.shape)} and attention_mask {list(attention_mask.shape)} "
                         "must both be [B, L]")
    if response_start.shape != input_ids.shape[:1]:
        raise ValueError(f"response_start must have shape [{input_ids.shape[0]}], got {list(response_start.shape)}")
    batch, length = input_ids.shape
    first = int(response_start.min())
    if not 1 <= first < length:
        raise ValueError(f"response_start must be in [1, {length - 1}] (a response needs a prompt before it), "
                         f"got min {first}")

    # 1. forward, logits only from the first position that scores a response token
    keep = length - (first - 1)  # positions first-1 .. L-1
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, L]
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                use_cache=False, logits_to_keep=keep)
    logits = out.logits  # [B, K, V] positions L-K .. L-1, K = keep (or L if keep was ignored)
    kept = logits.shape[1]
    if not keep <= kept <= length:
        raise ValueError(f"model returned logits for {kept} positions, expected {keep} (logits_to_keep) or {length}")

    # 2. position t scores token t + 1; the last position has no target (a dummy 0, dropped),
    #    which avoids slicing the logits (a non-contiguous slice would be copied)
    targets = torch.cat([input_ids[:, length - kept + 1:], input_ids.new_zeros(batch, 1)], dim=1)  # [B, K]
    logp = token_logprobs(logits, targets, temperature, chunk_size)[:, :-1]  # [B, K-1] positions L-K .. L-2

    # 3. back to [B, L-1] coordinates, zero outside the response
    full = torch.cat([logp.new_zeros(batch, length - kept), logp], dim=1)  # [B, L-1]
    return torch.where(response_mask(attention_mask, response_start), full, 0.0)  # [B, L-1]
