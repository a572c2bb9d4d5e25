"""The weight-sync protocol between the learner (rank 0, the sender) and the vLLM
workers (ranks 1..N, the receivers), over one process group (gloo or NCCL).

One update of policy version v:
1. the sender plans a layout (mogrpo/weight_layout.py: parameters in buckets of at most
   `bucket_bytes`) and publishes it in the rendezvous store once; later updates name it
   by fingerprint;
2. every receiver announces `ready/v/<rank>`; the sender waits for all of them and, past
   the timeout, fails naming the peers that did not answer (instead of hanging);
3. one broadcast per bucket, a few in flight at once; where consecutive parameters already
   lie side by side in one storage of the wire dtype (DeepSpeed's flat ZeRO buffers), the
   bucket is a view of that storage and is sent without copying; otherwise the sender
   packs the next bucket while earlier ones are on the wire;
4. receivers unpack each bucket into (name, tensor) views and hand them to the engine;
5. optionally (`verify_checksum`) both ends hash every bucket and the sender compares.

Both roles import this module; it imports torch only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from mogrpo.weight_layout import (
    Placement,
    WeightLayout,
    WeightSyncError,
    bucket_digest,
    pack_bucket,
    plan_layout,
    storage_placements,
    unpack_bucket,
)

IN_FLIGHT = 2  # buckets on the wire at once, so the wire never waits for packing or loading


@dataclass
class SyncEndpoint:
    """Where and how the sync group meets; sent by the driver to every member."""

    transport: str  # "gloo" | "nccl"
    master_addr: str
    master_port: int
    world_size: int
    timeout_s: float
    peer_names: list[str] = field(default_factory=list)  # index = rank; rank 0 is the learner
    group_name: str = "weights"


class SyncGroup:
    """One member of the sync group: a rendezvous store plus a gloo or NCCL process group
    that lives beside (and never touches) DeepSpeed's or vLLM's own groups."""

    def __init__(self, endpoint: SyncEndpoint, rank: int):
        if endpoint.transport not in ("gloo", "nccl"):
            raise WeightSyncError(f"weight_sync.transport: unknown transport {endpoint.transport!r} (gloo or nccl)")
        if endpoint.transport == "nccl" and not torch.cuda.is_available():
            raise WeightSyncError("weight_sync.transport is 'nccl' but this process sees no CUDA device; use 'gloo'")
        self.endpoint = endpoint
        self.rank = rank
        self.timeout = timedelta(seconds=endpoint.timeout_s)
        self.device = torch.device("cuda", torch.cuda.current_device()) if endpoint.transport == "nccl" else torch.device("cpu")
        try:
            tcp = dist.TCPStore(
                endpoint.master_addr,
                endpoint.master_port,
                endpoint.world_size,
                is_master=rank == 0,
                timeout=self.timeout,
                wait_for_workers=False,
            )
        except Exception as err:
            raise WeightSyncError(
                f"{self.name(rank)}: cannot reach the sync rendezvous at "
                f"{endpoint.master_addr}:{endpoint.master_port} within {endpoint.timeout_s:g}s: {err}"
            ) from err
        self.store = dist.PrefixStore(endpoint.group_name + "/", tcp)
        self._tcp = tcp  # the master store must outlive the group
        self._probe: torch.Tensor | None = None
        # Meet in the store first, so a missing member is named instead of timing out anonymously.
        self.store.set(f"joined/{rank}", "1")
        self.wait_for_keys({r: f"joined/{r}" for r in range(endpoint.world_size)}, "join the sync group")
        if endpoint.transport == "gloo":
            self.pg = dist.ProcessGroupGloo(self.store, rank, endpoint.world_size, self.timeout)
        else:
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = self.timeout
            self.pg = dist.ProcessGroupNCCL(self.store, rank, endpoint.world_size, options)

    def name(self, rank: int) -> str:
        names = self.endpoint.peer_names
        return f"{names[rank]} (rank {rank})" if rank < len(names) else f"rank {rank}"

    def broadcast(self, tensor: torch.Tensor) -> dist.Work:
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        opts.rootTensor = 0
        opts.timeout = self.timeout
        return self.pg.broadcast([tensor], opts)

    def probe(self, nbytes: int) -> None:
        """One raw broadcast of `nbytes` (every member calls it) into a buffer kept across
        calls: what the wire alone costs, without packing, loading or page faults."""
        if self._probe is None or self._probe.numel() != nbytes:
            self._probe = torch.zeros(nbytes, dtype=torch.uint8, device=self.device)
        self.broadcast(self._probe).wait()

    def wait_for_keys(self, keys: dict[int, str], what: str) -> None:
        """Wait until every rank's key exists; past the timeout name the silent ranks."""
        try:
            self.store.wait(list(keys.values()), self.timeout)
        except Exception as err:  # DistStoreError on timeout
            silent = [self.name(r) for r, key in keys.items() if not self.store.check([key])]
            raise WeightSyncError(
                f"weight sync: {', '.join(silent) or 'a peer'} did not {what} within "
                f"{self.endpoint.timeout_s:g}s (dead or stuck actor?)"
            ) from err

    def close(self) -> None:
        self.pg = None
        self._probe = None
        self.store = None
        self._tcp = None


@dataclass
class SendStats:
    version: int
    bytes: int
    buckets: int
    seconds: float
    wait_seconds: float  # waiting for receivers to be ready
    view_buckets: int = 0  # buckets sent straight from a storage, without packing


class WeightSender:
    """Rank 0: sends versioned, bucketed weights to every receiver of the group."""

    def __init__(self, group: SyncGroup, bucket_bytes: int, verify_checksum: bool = False):
        self.group = group
        self.bucket_bytes = int(bucket_bytes)
        self.verify_checksum = verify_checksum
        self._layout: tuple[tuple, WeightLayout] | None = None
        self._pack_buffers: list[torch.Tensor | None] = [None] * (IN_FLIGHT + 1)
        self._published: set[str] = set()

    def layout_for(self, params: list[tuple[str, torch.dtype, tuple[int, ...]]],
                   placements: list[Placement | None]) -> WeightLayout:
        """The cached layout while names, shapes and storage placements stay the same."""
        key = (params, placements)
        if self._layout is None or self._layout[0] != key:
            self._layout = (key, plan_layout(params, self.bucket_bytes, placements))
        return self._layout[1]

    def _pack_slot(self, i: int, layout: WeightLayout) -> torch.Tensor:
        """One of IN_FLIGHT + 1 reused packing buffers, big enough for any packed bucket."""
        need = max(n for n, src in zip(layout.bucket_nbytes, layout.sources) if src is None)
        slot = i % (IN_FLIGHT + 1)
        buffer = self._pack_buffers[slot]
        if buffer is None or buffer.numel() < need:
            buffer = self._pack_buffers[slot] = torch.empty(need, dtype=torch.uint8, device=self.group.device)
        return buffer

    def send(self, version: int, named: Sequence[tuple[str, torch.Tensor]], dtype: torch.dtype | None = None) -> SendStats:
        """Send all `named` tensors as policy `version` (cast to `dtype` on the wire if given)."""
        t0 = time.perf_counter()
        group, store = self.group, self.group.store
        tensors = [t.detach() for _, t in named]
        params = [(n, dtype or t.dtype, tuple(t.shape)) for (n, _), t in zip(named, tensors)]
        placements, storages = storage_placements(tensors, [d for _, d, _ in params], group.device)
        layout = self.layout_for(params, placements)
        fp = layout.fingerprint
        if fp not in self._published:
            store.set(f"layout/{fp}", layout.to_json())
            self._published.add(fp)
        store.set(f"update/{version}", json.dumps({"fingerprint": fp, "verify": self.verify_checksum}))
        receivers = range(1, group.endpoint.world_size)
        group.wait_for_keys({r: f"ready/{version}/{r}" for r in receivers}, f"get ready for version {version}")
        t_ready = time.perf_counter()

        remaining = iter(tensors)
        in_flight: list[tuple[dist.Work, torch.Tensor]] = []
        digests = []
        try:
            for i, (specs, nbytes, source) in enumerate(zip(layout.buckets, layout.bucket_nbytes, layout.sources)):
                members = [next(remaining) for _ in specs]
                if source is not None:  # already contiguous in one storage: send it as it lies
                    buffer = storages[source[0]][source[1] : source[1] + nbytes]
                else:  # slot i was last used by bucket i - (IN_FLIGHT + 1), whose send is done
                    buffer = pack_bucket(specs, nbytes, members, group.device, self._pack_slot(i, layout))
                if self.verify_checksum:
                    digests.append(bucket_digest(buffer))
                in_flight.append((group.broadcast(buffer), buffer))
                if len(in_flight) > IN_FLIGHT:  # pack the next bucket while earlier ones are on the wire
                    in_flight.pop(0)[0].wait()
            for work, _ in in_flight:
                work.wait()
        except WeightSyncError:
            raise
        except Exception as err:
            raise WeightSyncError(
                f"weight sync of version {version} failed during broadcast to "
                f"{', '.join(group.name(r) for r in receivers)}: {err}"
            ) from err
        if self.verify_checksum:
            group.wait_for_keys({r: f"digest/{version}/{r}" for r in receivers}, "report its checksums")
            for r in receivers:
                theirs = json.loads(store.get(f"digest/{version}/{r}"))
                bad = [i for i, (a, b) in enumerate(zip(digests, theirs)) if a != b]
                if bad or len(theirs) != len(digests):
                    raise WeightSyncError(f"weight sync v{version}: {group.name(r)} holds different bytes in buckets {bad}")
        return SendStats(version, layout.total_bytes, len(layout.buckets), time.perf_counter() - t0, t_ready - t0,
                         sum(source is not None for source in layout.sources))


class WeightReceiver:
    """Ranks 1..N: receive the buckets of one version and yield them unpacked."""

    def __init__(self, group: SyncGroup, keep_buffers: bool | None = None):
        self.group = group
        self._layouts: dict[str, WeightLayout] = {}
        # On CPU a fresh buffer per bucket costs page faults on every update; keeping one
        # per bucket costs a copy of the weights in memory. On GPU the caching allocator
        # already reuses memory, and device memory is dear.
        self.keep_buffers = group.device.type == "cpu" if keep_buffers is None else keep_buffers
        self._buffers: dict[tuple[str, int], torch.Tensor] = {}

    def receive(self, version: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """Yield one list of (name, tensor) per bucket. Each bucket has its own buffer, so
        the engine may keep views of earlier buckets until the update is finished (but
        not after: with `keep_buffers` the next update receives into the same buffers)."""
        group, store, rank = self.group, self.group.store, self.group.rank
        store.set(f"ready/{version}/{rank}", "1")
        try:
            header = json.loads(store.get(f"update/{version}"))
        except Exception as err:
            raise WeightSyncError(
                f"{group.name(rank)}: the learner did not announce version {version} within {group.endpoint.timeout_s:g}s"
            ) from err
        fp = header["fingerprint"]
        if fp not in self._layouts:
            self._layouts[fp] = WeightLayout.from_json(store.get(f"layout/{fp}").decode())
        layout = self._layouts[fp]

        if self.keep_buffers and any(key[0] != fp for key in self._buffers):
            self._buffers = {}  # a new layout: drop the old one's buffers

        def post(i: int) -> tuple[dist.Work, torch.Tensor]:
            buffer = self._buffers.get((fp, i))
            if buffer is None:
                buffer = torch.empty(layout.bucket_nbytes[i], dtype=torch.uint8, device=group.device)
                if self.keep_buffers:  # safe to reuse: the engine lets go of an update's views when it ends
                    self._buffers[(fp, i)] = buffer
            return group.broadcast(buffer), buffer

        digests = []
        count = len(layout.buckets)
        pending = [post(i) for i in range(min(IN_FLIGHT, count))]
        for i, specs in enumerate(layout.buckets):
            work, buffer = pending.pop(0)
            try:
                work.wait()
            except Exception as err:
                raise WeightSyncError(f"{group.name(rank)}: receiving version {version} failed: {err}") from err
            if i + IN_FLIGHT < count:  # later buckets arrive while the engine loads this one
                pending.append(post(i + IN_FLIGHT))
            if header["verify"]:
                digests.append(bucket_digest(buffer))
            yield unpack_bucket(specs, buffer)
        if header["verify"]:
            store.set(f"digest/{version}/{rank}", json.dumps(digests))
