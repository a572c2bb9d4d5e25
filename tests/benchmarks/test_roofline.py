"""The step's floors (benchmarks/roofline.py) on a decoder small enough to count by hand."""

import pytest

from benchmarks.roofline import DecoderShape, StepWork, forward_flops, phase_floors

# hidden 4, intermediate 8, 2 layers, 2 heads sharing 1 KV head (K and V are 4 -> 2), vocab 10
SHAPE = DecoderShape(hidden=4, intermediate=8, layers=2, heads=2, kv_heads=1, vocab=10, parameters=100)
# 2 sequences of one group, each 1 prompt token + 1 response token, 1 decode step
WORK = StepWork(sequences=2, groups=1, prompt_tokens=2, response_tokens=2, max_new_tokens=1)


def test_flops_by_hand():
    # per layer: q,o 4x4 (x2), k,v 4x2 (x2), gate,up 4x8 (x2), down 8x4; then the LM head 4x10
    # 2 * (2 layers * (2*16 + 2*8 + 2*32 + 32) + 40) = 2 * (2 * 144 + 40) = 656
    assert SHAPE.matmul_flops_per_token() == 656
    # causal attention over 2 tokens: 4 * layers * hidden * (1 + 2) = 4 * 2 * 4 * 3
    assert SHAPE.attention_flops(1, 1) == 96
    assert forward_flops(SHAPE, WORK) == 656 * 4 + 2 * 96


def test_phase_floors_by_hand():
    floors = phase_floors(SHAPE, WORK, {"float32": 1000.0}, copy_bytes_per_s=100.0,
                          generate_dtype="float32", train_dtype="float32", wire_bytes=2)
    # generation: the shared prompt token once + 2 response tokens, and attention -> compute 2.16 s;
    # one decode step reads 200 bytes of weights at 100 B/s -> 2.0 s; the larger wins
    assert floors["generate"] == pytest.approx((656 * 3 + 192) / 1000)
    assert floors["reference"] == pytest.approx(2816 / 1000)
    assert floors["forward_backward"] == pytest.approx(3 * 2816 / 1000)
    assert floors["optimizer"] == pytest.approx(7 * 4 * 100 / 100)  # AdamW in float32: 4 reads, 3 writes
    assert floors["sync"] == pytest.approx(2 * 200 / 100)


def test_decode_bandwidth_bounds_generation_when_compute_is_cheap():
    floors = phase_floors(SHAPE, WORK, {"float32": 1e12}, copy_bytes_per_s=100.0,
                          generate_dtype="float32", train_dtype="float32", wire_bytes=2)
    assert floors["generate"] == pytest.approx(2.0)


def test_no_reference_pass_without_kl():
    floors = phase_floors(SHAPE, WORK, {"float32": 1000.0}, 100.0, "float32", "float32", reference=False)
    assert floors["reference"] == 0.0


def test_shape_from_a_hugging_face_config():
    config = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
              "num_key_value_heads": 3, "vocab_size": 49152}
    shape = DecoderShape.from_hf_config(config, parameters=134_515_008)
    assert shape.matmuls()[1] == (576, 192, 60)  # k and v: 3 heads of 64, in each of 30 layers
    assert shape.matmul_flops_per_token() == pytest.approx(2 * (30 * 3_538_944 + 576 * 49152))
