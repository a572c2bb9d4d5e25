"""StopOnSignal on real signals sent to this process: a step may be abandoned only inside
its abandonable part, and only when it would not end within the grace period."""

import os
import signal

import pytest

from orchestration.signals import RunStopped, StopOnSignal


@pytest.fixture
def stop():
    handler = StopOnSignal(grace_s=10)
    yield handler
    handler.restore()


def test_not_armed_stops_at_once(stop):
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
    assert not stop.abandoned


def test_a_step_that_ends_within_the_grace_period_finishes(stop):
    stop.arm()
    with stop.abandonable(expected_s=5):
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested == signal.SIGTERM and not stop.abandoned
    with pytest.raises(KeyboardInterrupt):  # the second signal
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("expected_s", [None, 60])
def test_a_longer_step_is_abandoned_only_inside_its_abandonable_part(stop, expected_s):
    stop.arm()
    with stop.abandonable(expected_s):
        pass
    os.kill(os.getpid(), signal.SIGINT)  # outside: the step finishes
    assert stop.requested == signal.SIGINT and not stop.abandoned

    stop.requested = None
    if expected_s is None:  # unknown length (the first step): it finishes
        with stop.abandonable(expected_s):
            os.kill(os.getpid(), signal.SIGTERM)
        assert not stop.abandoned
        return
    with pytest.raises(KeyboardInterrupt), stop.abandonable(expected_s):
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.abandoned and stop.requested == signal.SIGTERM


def test_stopped_message_says_what_was_kept(tmp_path):
    assert "after step 3 (checkpointed); resume with" in str(RunStopped(signal.SIGTERM, 3, tmp_path))
    assert "during step 4, which could not finish in the grace period; step 3 is checkpointed" in str(
        RunStopped(signal.SIGTERM, 3, tmp_path, abandoned=4))
    assert "nothing to checkpoint; start again with" in str(RunStopped(signal.SIGINT, 0, tmp_path, abandoned=1))
