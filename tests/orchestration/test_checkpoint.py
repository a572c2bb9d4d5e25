"""Driver checkpoint state: committed atomically, pruned, and damaged state is an error."""

import json

import pytest

from orchestration.checkpoint import (DriverState, checkpoint_dir, commit, final_dir, final_is_current, mark_final,
                                      read_latest, tag_for, unmark_final)


def test_commit_read_and_prune(tmp_path):
    assert read_latest(tmp_path) is None
    for step in (1, 2, 3):
        (checkpoint_dir(tmp_path) / tag_for(step)).mkdir(parents=True)
        commit(tmp_path, DriverState(step, step, 10 * step, tag_for(step)), keep=2)
    assert read_latest(tmp_path) == DriverState(3, 3, 30, "step-0000003")
    assert sorted(p.name for p in checkpoint_dir(tmp_path).iterdir() if p.is_dir()) == ["step-0000002", "step-0000003"]


def test_damaged_or_dangling_state_is_an_error(tmp_path):
    root = checkpoint_dir(tmp_path)
    root.mkdir()
    (root / "latest.json").write_text("{not json")
    with pytest.raises(ValueError, match="latest.json is damaged"):
        read_latest(tmp_path)
    (root / "latest.json").write_text(json.dumps({"step": 4, "policy_version": 4, "prompt_position": 0, "tag": "step-0000004"}))
    with pytest.raises(FileNotFoundError, match="names checkpoint 'step-0000004', which is missing"):
        read_latest(tmp_path)


def test_rng_states_survive_a_json_round_trip(tmp_path):
    import random

    import numpy as np
    import torch

    from mogrpo.rng import capture_rng, restore_rng

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    (checkpoint_dir(tmp_path) / tag_for(5)).mkdir(parents=True)
    commit(tmp_path, DriverState(5, 5, 50, tag_for(5), capture_rng()), keep=1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(read_latest(tmp_path).rng)  # through latest.json
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    restore_rng({})  # a checkpoint of an older release has no RNG states: nothing to restore


def test_final_is_current_only_for_the_checkpoint_it_was_written_from(tmp_path):
    import os

    (checkpoint_dir(tmp_path) / tag_for(2)).mkdir(parents=True)
    state = DriverState(2, 2, 20, tag_for(2))
    commit(tmp_path, state, keep=1)
    assert not final_is_current(tmp_path, state)  # no final/ yet
    final_dir(tmp_path).mkdir()
    (final_dir(tmp_path) / "config.json").write_text("{}")
    # a run of an older release (no final.json): final/ counts if written after the checkpoint
    latest = checkpoint_dir(tmp_path) / "latest.json"
    os.utime(final_dir(tmp_path), (latest.stat().st_mtime - 10,) * 2)
    assert not final_is_current(tmp_path, state)
    os.utime(final_dir(tmp_path), (latest.stat().st_mtime + 10,) * 2)
    assert final_is_current(tmp_path, state)
    # the marker decides, whatever the times
    mark_final(tmp_path, 1, 1)
    assert not final_is_current(tmp_path, state)
    mark_final(tmp_path, 2, 2)
    os.utime(final_dir(tmp_path), (latest.stat().st_mtime - 10,) * 2)
    assert final_is_current(tmp_path, state)
    assert not final_is_current(tmp_path, DriverState(3, 3, 30, tag_for(3)))
    # a run that trains again (e.g. `checkpoint.resume=false` in the same folder) drops the marker
    unmark_final(tmp_path)
    assert not final_is_current(tmp_path, state)
