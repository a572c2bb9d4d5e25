"""free_port: a rendezvous port that outgoing connections cannot take first."""

import socket

from mogrpo.runtime import ephemeral_port_range, free_port


def test_free_port_is_bindable_and_outside_the_ephemeral_range():
    low, high = ephemeral_port_range()
    assert 0 < low <= high
    ports = {free_port() for _ in range(8)}
    for port in ports:
        if low > 21000:
            assert 20000 <= port < low, (port, low)
        with socket.socket() as s:
            s.bind(("", port))
    assert len(ports) > 1  # drawn at random: concurrent callers do not all pick one port


def test_a_bound_port_is_not_handed_out():
    with socket.socket() as s:
        s.bind(("", free_port()))
        s.listen()
        taken = s.getsockname()[1]
        assert all(free_port() != taken for _ in range(200))
