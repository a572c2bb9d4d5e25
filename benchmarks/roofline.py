"""What one GRPO step costs at the least on this machine: pure arithmetic on a decoder's
shapes, the step's token counts and two measured rates (GEMM throughput, copy bandwidth).
No torch here; `benchmarks/step.py` measures the rates and the step.

A phase's floor is the larger of its compute time (FLOPs / GEMM rate) and its memory time
(bytes that must move / copy bandwidth), as in a roofline:

- generation: a forward over every prompt token (once per prompt: the group shares its
  prefix) and every generated token; each decode step also reads all weights once, so
  `max_new_tokens` steps bound it from below by bandwidth;
- reference log-probs: one forward over every token of every sequence;
- forward + backward: three forwards' worth over the same tokens (backward = 2x forward);
- optimizer: AdamW reads weights, gradients and both moments and writes three of them back,
  in float32 (ZeRO's master copy);
- weight sync: the policy's weights in the wire dtype, read once and written once.

FLOPs count the matrix products (2 per multiply-add) of every layer and of the LM head,
plus causal attention's score and value products; norms, activations and the softmax are
left out (well under 1% at these sizes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class DecoderShape:
    """The sizes that decide a Llama-style decoder's cost."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    parameters: int  # all of them, embeddings included

    @classmethod
    def from_hf_config(cls, config: Mapping, parameters: int) -> DecoderShape:
        return cls(hidden=config["hidden_size"], intermediate=config["intermediate_size"],
                   layers=config["num_hidden_layers"], heads=config["num_attention_heads"],
                   kv_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
                   vocab=config["vocab_size"], parameters=parameters)

    def matmuls(self) -> list[tuple[int, int, int]]:
        """(in, out, times per token) of every weight matrix a token passes through."""
        kv = self.hidden // self.heads * self.kv_heads
        per_layer = [(self.hidden, self.hidden, 2),  # q, o
                     (self.hidden, kv, 2),  # k, v
                     (self.hidden, self.intermediate, 2),  # gate, up
                     (self.intermediate, self.hidden, 1)]  # down
        return [(k, n, c * self.layers) for k, n, c in per_layer] + [(self.hidden, self.vocab, 1)]

    def matmul_flops_per_token(self) -> float:
        """Forward FLOPs of one token through the weight matrices."""
        return float(sum(2 * k * n * c for k, n, c in self.matmuls()))

    def attention_flops(self, prompt: int, response: int) -> float:
        """Forward FLOPs of causal attention (scores and values) over one sequence of
        `prompt + response` tokens: token i attends to i + 1 positions."""
        n = prompt + response
        return 4.0 * self.layers * self.hidden * n * (n + 1) / 2


@dataclass(frozen=True)
class StepWork:
    """The token counts of one step (summed over its sequences)."""

    sequences: int
    groups: int  # prompts: their tokens are prefilled once per group
    prompt_tokens: int  # summed over sequences
    response_tokens: int
    max_new_tokens: int  # decode steps of the longest response

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.response_tokens


def forward_flops(shape: DecoderShape, work: StepWork) -> float:
    """One forward over every token of every sequence (attention on the mean sequence)."""
    prompt, response = work.prompt_tokens / work.sequences, work.response_tokens / work.sequences
    return shape.matmul_flops_per_token() * work.tokens + work.sequences * shape.attention_flops(prompt, response)


def phase_floors(shape: DecoderShape, work: StepWork, gemm_flops_per_s: Mapping[str, float],
                 copy_bytes_per_s: float, generate_dtype: str, train_dtype: str, wire_bytes: int = 2,
                 reference: bool = True) -> dict[str, float]:
    """Seconds each phase needs at the least (module docstring); `gemm_flops_per_s` by dtype name."""
    gen_rate, train_rate = gemm_flops_per_s[generate_dtype], gemm_flops_per_s[train_dtype]
    generated = work.prompt_tokens // max(1, work.sequences // work.groups) + work.response_tokens
    gen_compute = (shape.matmul_flops_per_token() * generated
                   + work.sequences * shape.attention_flops(work.prompt_tokens / work.sequences,
                                                            work.response_tokens / work.sequences)) / gen_rate
    weight_bytes = shape.parameters * wire_bytes
    gen_memory = work.max_new_tokens * weight_bytes / copy_bytes_per_s
    fwd = forward_flops(shape, work)
    return {
        "generate": max(gen_compute, gen_memory),
        "reference": fwd / train_rate if reference else 0.0,
        "forward_backward": 3 * fwd / train_rate,
        "optimizer": 7 * 4 * shape.parameters / copy_bytes_per_s,
        "sync": 2 * weight_bytes / copy_bytes_per_s,
    }
