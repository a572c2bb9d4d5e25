"""The weight-sync protocol over real gloo process groups (threads stand in for actors)."""

import threading

import pytest
import torch

from mogrpo.runtime import free_port
from mogrpo.weight_layout import (
    WeightLayout,
    pack_bucket,
    plan_layout,
    storage_placements,
    unpack_bucket,
)
from mogrpo.weight_sync import (
    SyncEndpoint,
    SyncGroup,
    WeightReceiver,
    WeightSender,
    WeightSyncError,
)


def named_tensors():
    g = torch.Generator().manual_seed(0)
    return [("a", torch.randn(100, 30, generator=g)), ("b", torch.randn(7, generator=g).to(torch.bfloat16)),
            ("c", torch.randn(300, 100, generator=g)), ("d", torch.arange(5))]


def test_layout_buckets_and_alignment():
    layout = plan_layout([(n, t.dtype, t.shape) for n, t in named_tensors()], bucket_bytes=20_000)
    # a: 12000 B; b: 14 B at offset 12032 (64-aligned); c: 120000 B > bucket -> own bucket; d: 40 B
    assert [[s.name for s in b] for b in layout.buckets] == [["a", "b"], ["c"], ["d"]]
    assert layout.buckets[0][1].offset == 12032
    assert layout.total_bytes == 12000 + 14 + 120000 + 40
    assert WeightLayout.from_json(layout.to_json()) == layout
    assert plan_layout([("a", torch.float32, (3,))], 64).fingerprint != layout.fingerprint


def test_pack_unpack_roundtrip_with_wire_dtype():
    named = named_tensors()[:2]
    layout = plan_layout([(n, torch.bfloat16, t.shape) for n, t in named], 1 << 20)
    buffer = pack_bucket(layout.buckets[0], layout.bucket_nbytes[0], [t for _, t in named], "cpu")
    for (name, original), (name2, got) in zip(named, unpack_bucket(layout.buckets[0], buffer)):
        assert name == name2 and got.dtype == torch.bfloat16
        assert torch.equal(got, original.to(torch.bfloat16))


def flat_views(sizes, dtype=torch.bfloat16, gap=0):
    """Tensors lying side by side (with `gap` elements between) in one storage, as
    DeepSpeed's flat ZeRO buffers hold parameters."""
    flat = torch.arange(sum(sizes) + gap * len(sizes), dtype=torch.float32).to(dtype)
    views, at = [], 0
    for i, n in enumerate(sizes):
        views.append((f"p{i}", flat[at : at + n].view(n // 4, 4)))
        at += n + gap
    return flat, views


def test_tensors_in_one_storage_become_view_buckets():
    flat, views = flat_views([400, 800, 1200], gap=4)  # bf16: 800, 1600, 2400 bytes, 8 B gaps
    loose = ("loose", torch.ones(3, dtype=torch.bfloat16))
    named = [*views[:2], loose, views[2]]
    placements, _ = storage_placements([t for _, t in named], [torch.bfloat16] * 4, torch.device("cpu"))
    assert placements[2] is None and placements[0] == (flat.untyped_storage().data_ptr(), 0)
    layout = plan_layout([(n, t.dtype, t.shape) for n, t in named], 1 << 20, placements)
    # p0, p1 share a view bucket at their storage offsets; the loose tensor is packed; p2 starts a new view
    assert [[s.name for s in b] for b in layout.buckets] == [["p0", "p1"], ["loose"], ["p2"]]
    assert [s.offset for s in layout.buckets[0]] == [0, 808]
    assert layout.sources[0] == (placements[0][0], 0) and layout.sources[1] is None
    # p2 lies at byte 2416: the view starts at the 64-byte boundary below it
    assert layout.sources[2] == (placements[0][0], 2368) and layout.buckets[2][0].offset == 48
    # A bucket limit splits a run; a wire dtype other than the storage's means packing.
    assert len(plan_layout([(n, t.dtype, t.shape) for n, t in views], 2500, placements[:2] + placements[3:]).buckets) == 2
    assert storage_placements([t for _, t in views], [torch.float32] * 3, torch.device("cpu"))[0] == [None] * 3
    assert WeightLayout.from_json(layout.to_json()) == layout


def run_group(world, timeout_s=10.0, receivers=None, bucket_bytes=50_000, verify=True):
    endpoint = SyncEndpoint("gloo", "127.0.0.1", free_port(), world, timeout_s,
                            ["learner"] + [f"rollout-{i}" for i in range(world - 1)])
    received, errors = {}, []

    def receiver(rank):
        try:
            group = SyncGroup(endpoint, rank)
            r = WeightReceiver(group)
            for version in (1, 2):
                received[(rank, version)] = [(n, t.clone()) for bucket in r.receive(version) for n, t in bucket]
        except Exception as err:  # surfaced by the test
            errors.append(err)

    threads = [threading.Thread(target=receiver, args=(r,), daemon=True) for r in (receivers or range(1, world))]
    for t in threads:
        t.start()
    sender = WeightSender(SyncGroup(endpoint, 0), bucket_bytes, verify_checksum=verify)
    return sender, threads, received, errors


def test_two_receivers_get_identical_weights_and_layout_is_cached():
    sender, threads, received, errors = run_group(3)
    named = named_tensors()
    stats1 = sender.send(1, named)
    stats2 = sender.send(2, [(n, t * 2) for n, t in named])
    for t in threads:
        t.join(30)
    assert not errors
    assert stats1.buckets == 3 and stats1.bytes == stats2.bytes
    assert len(sender._published) == 1  # one layout, published once
    for rank in (1, 2):
        for version, scale in ((1, 1), (2, 2)):
            got = dict(received[(rank, version)])
            for name, tensor in named:
                assert torch.equal(got[name], tensor * scale)


def test_view_buckets_arrive_intact_and_follow_the_storage():
    sender, threads, received, errors = run_group(2, bucket_bytes=3000)
    flat, views = flat_views([400, 800, 1200, 40], gap=8)
    named = [*views, ("loose", torch.full((5,), 7.0))]
    expected = {1: {n: t.clone() for n, t in named}}
    stats1 = sender.send(1, named)
    flat.mul_(2)  # an optimizer step in place: same storage, same layout
    expected[2] = {n: t.clone() for n, t in named}
    stats2 = sender.send(2, named)
    for t in threads:
        t.join(30)
    assert not errors
    assert stats1.view_buckets == stats2.view_buckets == 2 and stats1.buckets == 3
    assert len(sender._published) == 1
    for version in (1, 2):
        got = dict(received[(1, version)])
        assert got.keys() == expected[version].keys()
        for name, tensor in expected[version].items():
            assert torch.equal(got[name], tensor), (version, name)
    assert not torch.equal(expected[1]["p1"], expected[2]["p1"])


def test_reused_packing_and_receive_buffers_keep_versions_apart():
    # 12 packed buckets: more than the sender's IN_FLIGHT + 1 packing slots.
    sender, threads, received, errors = run_group(2, bucket_bytes=1000, verify=False)
    g = torch.Generator().manual_seed(1)
    named = [(f"w{i}", torch.randn(200, generator=g)) for i in range(12)]
    stats = sender.send(1, named)
    sender.send(2, [(n, -t) for n, t in named])
    for t in threads:
        t.join(30)
    assert not errors and stats.buckets == 12 and stats.view_buckets == 0
    for version, sign in ((1, 1), (2, -1)):
        got = dict(received[(1, version)])
        assert all(torch.equal(got[n], sign * t) for n, t in named)


def test_receiver_that_never_joins_is_named():
    endpoint = SyncEndpoint("gloo", "127.0.0.1", free_port(), 2, 1.5, ["learner", "rollout-0"])
    with pytest.raises(WeightSyncError, match=r"rollout-0 \(rank 1\) did not join the sync group within 1.5s"):
        SyncGroup(endpoint, 0)


def test_receiver_that_stops_answering_is_named():
    # rollout-1 joins the group, takes version 1, then dies (its thread returns).
    endpoint = SyncEndpoint("gloo", "127.0.0.1", free_port(), 3, 2.0, ["learner", "rollout-0", "rollout-1"])
    survivor_errors = []

    def receiver(rank, versions):
        r = WeightReceiver(SyncGroup(endpoint, rank))
        try:
            for v in versions:
                list(r.receive(v))
        except WeightSyncError as err:
            survivor_errors.append(str(err))

    threads = [threading.Thread(target=receiver, args=(1, (1, 2)), daemon=True),
               threading.Thread(target=receiver, args=(2, (1,)), daemon=True)]
    for t in threads:
        t.start()
    sender = WeightSender(SyncGroup(endpoint, 0), 1 << 20)
    sender.send(1, named_tensors())
    with pytest.raises(WeightSyncError, match=r"rollout-1 \(rank 2\) did not get ready for version 2"):
        sender.send(2, named_tensors())
    threads[0].join(10)
    # The surviving worker times out too, instead of hanging, and says who it is.
    assert survivor_errors and survivor_errors[0].startswith("rollout-0 (rank 1): receiving version 2 failed")


def test_checksum_detects_different_bytes(monkeypatch):
    import mogrpo.weight_sync as ws

    sender, threads, received, errors = run_group(2)
    real = ws.bucket_digest
    calls = {"n": 0}

    def flaky(buffer):  # the sender's first digest disagrees with what the receiver saw
        calls["n"] += 1
        return "corrupted" if calls["n"] == 1 else real(buffer)

    monkeypatch.setattr(ws, "bucket_digest", flaky)
    with pytest.raises(WeightSyncError, match="holds different bytes in buckets"):
        sender.send(1, named_tensors())
