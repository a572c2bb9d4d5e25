"""The rollout stream on real actors: the staleness bound on real runs (k = 1 and 2), partial
rollouts that span a weight update and still train, load balancing towards a faster worker, scoring that starts before the last chunk is generated, a
stuck worker that becomes an error naming it, and a reward replica killed mid-run."""

import math
import time
from collections import Counter
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from mogrpo.batch import RolloutBatch
from mogrpo.config import load_config
from mogrpo.models import resolve_model
from mogrpo.prompts import PromptSampler, load_prompts
from orchestration.actors import start_actor
from orchestration.groups import ActorFailedError, RewardGroup, RolloutGroup, gather
from orchestration.pipeline import Group, GroupBuffer, RolloutStream
from orchestration.train import run
from rollout.worker import RolloutWorker
from tests.helpers import TINY, actor_processes, killing_after_step, run_metrics, tiny_run_overrides


def test_buffer_drops_old_groups_and_serves_the_oldest_first():
    buffer = GroupBuffer()
    for version, position in [(3, 30), (1, 10), (2, 20), (1, 11), (3, 31)]:
        buffer.add(Group(version, position, batch=None))
    assert buffer.drop_older_than(2) == 2 and sorted(buffer.positions()) == [20, 30, 31]
    assert [g.position for g in buffer.take(2)] == [20, 30] and buffer.positions() == [31]


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2])
def test_staleness_is_bounded_on_a_real_run(ray_local, tmp_path, quick_reward_model, k):
    cfg = load_config("cluster_configs/cpu_smoke.yaml", tiny_run_overrides(tmp_path, quick_reward_model, steps=4) + [
        f"rollout.max_staleness={k}", "rollout.chunk_groups=1", "checkpoint.every=0"])
    run(cfg)
    run_dir = tmp_path / "e2e"
    records = run_metrics(run_dir)
    assert sorted(records) == [1, 2, 3, 4] and records[4]["policy_version"] == 4
    staleness = [pq.read_table(run_dir / "rollouts" / f"step-{s:06d}.parquet").column("staleness").to_pylist()
                 for s in range(1, 5)]
    assert max(map(max, staleness)) <= k and all(records[s]["pipeline/staleness_max"] <= k for s in records)
    # the workers ran ahead while the learner trained: later steps train on older versions' groups
    assert max(map(max, staleness[1:])) == k, staleness
    assert all(records[s]["pipeline/dropped_stale"] == 0 for s in records)
    assert all(0 <= records[s][key] <= 1 for s in records for key in ("pipeline/learner_idle", "pipeline/rollout_idle"))


class HoldsOneChunkForAnUpdate(RolloutWorker):
    """Takes one engine step of the first chunk of the second batch (group `HELD_GROUP`), then
    waits until the learner's first update has landed before finishing it: that chunk's responses
    span the update whatever the speed of the machine."""

    HELD_GROUP = 2  # prompts_per_step = 2 and one group per chunk: the second batch's first chunk

    def generate(self, prompts, sampling, first_group_id=0, expected_version=None):
        self.holding = first_group_id == self.HELD_GROUP and self.version == 0
        return super().generate(prompts, sampling, first_group_id, expected_version)

    def _run_until_done(self, request_ids):
        if self.holding:
            self.holding = False
            with self.engine_lock:
                self._step()  # the prompt and the first token, with version 0's weights
            deadline = time.monotonic() + 300
            while self.version == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        return super()._run_until_done(request_ids)


@pytest.mark.slow
def test_partial_rollout_updates_workers_mid_response_and_still_trains(ray_local, tmp_path, quick_reward_model,
                                                                      monkeypatch):
    import orchestration.actors

    start = orchestration.actors.start_actor
    monkeypatch.setattr(orchestration.actors, "start_actor", lambda role, *a, **kw: start(
        role, *a, **kw, **({"actor_class": HoldsOneChunkForAnUpdate} if role == "rollout" else {})))
    # One chunk at a time on the worker, so the held chunk holds the engine and nothing else finishes it.
    cfg = load_config("cluster_configs/cpu_smoke.yaml", tiny_run_overrides(tmp_path, quick_reward_model, steps=4) + [
        "rollout.max_staleness=1", "rollout.partial_rollout=true", "rollout.chunk_groups=1",
        "rollout.max_chunks_per_worker=1", "rollout.max_new_tokens=32", "checkpoint.every=0"])
    run(cfg)
    run_dir = tmp_path / "e2e"
    records = run_metrics(run_dir)
    assert sorted(records) == [1, 2, 3, 4] and records[4]["policy_version"] == 4
    rows = [r for s in range(1, 5) for r in pq.read_table(run_dir / "rollouts" / f"step-{s:06d}.parquet").to_pylist()]
    assert all(r["policy_version"] <= r["policy_version_last"] and 0 <= r["staleness"] <= 1 for r in rows)
    held = [r for r in rows if r["group_id"] == HoldsOneChunkForAnUpdate.HELD_GROUP]
    assert held and all((r["policy_version"], r["policy_version_last"]) == (0, 1) for r in held), held
    assert max(records[s]["pipeline/mixed_version_share"] for s in records) > 0
    assert all(math.isfinite(records[s]["loss"]) for s in records)


def _stream(cfg, workers, reward_model, tokenizer_path):
    from transformers import AutoTokenizer

    rollout = RolloutGroup(workers, [f"rollout-{i}" for i in range(len(workers))], 1, timeouts=cfg.timeouts)
    reward = RewardGroup([start_actor("reward", cfg, reward_model)], ["reward-0"], timeouts=cfg.timeouts)
    gather({**{n: h.ready.remote() for n, h in zip(rollout.names, workers)},
            "reward-0": reward.handles[0].labels.remote()}, "start", 300)
    prompts, _ = load_prompts(cfg.data, AutoTokenizer.from_pretrained(tokenizer_path), cfg.seed)
    actors = SimpleNamespace(rollout=rollout, reward=reward)
    return RolloutStream(actors, PromptSampler(prompts, cfg.seed), cfg, version=0)


@pytest.mark.slow
def test_a_faster_worker_gets_more_chunks_and_scoring_overlaps_generation(ray_local, quick_reward_model):
    class SlowWorker(RolloutWorker):
        def generate(self, *args, **kwargs):
            time.sleep(1.0)
            return super().generate(*args, **kwargs)

    cfg = load_config(None, TINY + ["rollout.num_workers=2", "rollout.prompts_per_step=12", "rollout.chunk_groups=1",
                                    f"reward.model={quick_reward_model}"])
    path = resolve_model("tiny-llama")
    workers = [start_actor("rollout", cfg, path, index=0), start_actor("rollout", cfg, path, index=1,
                                                                       actor_class=SlowWorker)]
    stream = _stream(cfg, workers, quick_reward_model, path)
    batch, stats = stream.next_batch(version=0)
    assert isinstance(batch, RolloutBatch) and batch.num_groups == 12 and stats["pipeline/staleness_max"] == 0
    done = [(t, kind, name, n) for t, event, kind, name, n in stream.trace if event == "done"]
    per_worker = Counter({name: 0 for name in ("rollout-0", "rollout-1")})
    per_worker.update(name for _, kind, name, _ in done if kind == "generate")
    assert per_worker["rollout-0"] > per_worker["rollout-1"], per_worker
    first_scored = min(t for t, event, kind, _, _ in stream.trace if event == "issue" and kind == "score")
    last_generated = max(t for t, kind, _, _ in done if kind == "generate")
    assert first_scored < last_generated


@pytest.mark.slow
def test_a_stuck_worker_is_an_error_that_names_it(ray_local, quick_reward_model):
    class StuckWorker(RolloutWorker):
        def generate(self, *args, **kwargs):
            time.sleep(60)

    cfg = load_config(None, TINY + ["rollout.prompts_per_step=2", "timeouts.generate_s=3",
                                    f"reward.model={quick_reward_model}"])
    path = resolve_model("tiny-llama")
    stream = _stream(cfg, [start_actor("rollout", cfg, path, actor_class=StuckWorker)], quick_reward_model, path)
    t0 = time.monotonic()
    with pytest.raises(ActorFailedError, match=r"generate: rollout-0 did not answer within 3s \(timeouts.generate_s\)"):
        stream.next_batch(version=0)
    assert time.monotonic() - t0 < 30


@pytest.mark.slow
def test_a_killed_reward_replica_is_replaced_and_the_run_finishes(ray_local, tmp_path, quick_reward_model):
    cfg = load_config("cluster_configs/cpu_smoke.yaml", tiny_run_overrides(tmp_path, quick_reward_model, steps=4) + [
        "run_name=reward-comeback", "checkpoint.every=0", "reward.num_replicas=2", "reward.max_restarts=1",
        "rollout.chunk_groups=1"])
    run_dir, started = tmp_path / "reward-comeback", time.time()
    with killing_after_step(run_dir, 2, lambda: actor_processes("RewardActor", since=started)[:1]) as killed:
        run(cfg)
    assert killed, "no reward replica of the run was found"
    records = run_metrics(run_dir)
    assert sorted(records) == [1, 2, 3, 4] and records[4]["reward/restarts"] == 1
