"""The weight-sync protocol between the learner (rank 0, the sender) and the vLLM
workers (ranks 1..N, the receivers), over one process group (gloo or NCCL).

One update of policy version v:
1. the sender plans a layout (parameters packed into buckets of ~`bucket_bytes`) and
   publishes it in the rendezvous store once; later updates name it by fingerprint;
2. every receiver announces `ready/v/<rank>`; the sender waits for all of them and, past
   the timeout, fails naming the peers that did not answer (instead of hanging);
3. one broadcast per bucket; the sender packs bucket i+1 while bucket i is on the wire;
4. receivers unpack each bucket into (name, tensor) views and hand them to the engine;
5. optionally (`verify_checksum`) both ends hash every bucket and the sender compares.

Both roles import this module; it imports torch only.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

ALIGN = 64  # bytes; every tensor starts at an offset that any dtype view accepts


class WeightSyncError(RuntimeError):
    """A weight sync failed: a peer did not answer, or the two ends disagree."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # torch dtype name without the "torch." prefix
    shape: tuple[int, ...]
    offset: int  # byte offset inside the bucket
    nbytes: int


@dataclass(frozen=True)
class WeightLayout:
    """Which tensor lies where in which bucket. Equal layouts have equal fingerprints."""

    buckets: tuple[tuple[TensorSpec, ...], ...]
    bucket_nbytes: tuple[int, ...]

    @property
    def total_bytes(self) -> int:
        return sum(spec.nbytes for bucket in self.buckets for spec in bucket)

    @property
    def num_tensors(self) -> int:
        return sum(len(b) for b in self.buckets)

    def to_json(self) -> str:
        return json.dumps({"buckets": [[asdict(s) for s in b] for b in self.buckets], "bucket_nbytes": self.bucket_nbytes})

    @classmethod
    def from_json(cls, text: str) -> WeightLayout:
        data = json.loads(text)
        buckets = tuple(tuple(TensorSpec(**{**s, "shape": tuple(s["shape"])}) for s in b) for b in data["buckets"])
        return cls(buckets, tuple(data["bucket_nbytes"]))

    @property
    def fingerprint(self) -> str:
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:16]


def plan_layout(params: Iterable[tuple[str, torch.dtype, Sequence[int]]], bucket_bytes: int) -> WeightLayout:
    """Pack parameters, in order, into buckets of at most `bucket_bytes` (a larger
    tensor gets a bucket of its own)."""
    buckets: list[list[TensorSpec]] = [[]]
    sizes: list[int] = [0]
    for name, dtype, shape in params:
        nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        offset = -(-sizes[-1] // ALIGN) * ALIGN
        if buckets[-1] and offset + nbytes > bucket_bytes:
            buckets.append([])
            sizes.append(0)
            offset = 0
        buckets[-1].append(TensorSpec(name, str(dtype).removeprefix("torch."), tuple(shape), offset, nbytes))
        sizes[-1] = offset + nbytes
    if not buckets[-1]:
        raise WeightSyncError("no parameters to send")
    return WeightLayout(tuple(tuple(b) for b in buckets), tuple(sizes))


def pack_bucket(specs: Sequence[TensorSpec], nbytes: int, tensors: Sequence[torch.Tensor], device) -> torch.Tensor:
    """Copy `tensors` (matching `specs`) into one contiguous uint8 buffer."""
    buffer = torch.empty(nbytes, dtype=torch.uint8, device=device)
    for spec, tensor in zip(specs, tensors, strict=True):
        if tuple(tensor.shape) != spec.shape:
            raise WeightSyncError(f"{spec.name}: shape {tuple(tensor.shape)} differs from the layout's {spec.shape}")
        flat = tensor.detach().to(dtype=getattr(torch, spec.dtype)).contiguous().reshape(-1)
        buffer[spec.offset : spec.offset + spec.nbytes].copy_(flat.view(torch.uint8))
    return buffer


def unpack_bucket(specs: Sequence[TensorSpec], buffer: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Views of `buffer` as the named tensors of one bucket (no copy)."""
    return [
        (s.name, buffer[s.offset : s.offset + s.nbytes].view(getattr(torch, s.dtype)).view(s.shape)) for s in specs
    ]


def bucket_digest(buffer: torch.Tensor) -> str:
    return hashlib.blake2b(buffer.detach().cpu().numpy().tobytes(), digest_size=16).hexdigest()


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
        self.store = None
        self._tcp = None


@dataclass
class SendStats:
    version: int
    bytes: int
    buckets: int
    seconds: float
    wait_seconds: float  # waiting for receivers to be ready


class WeightSender:
    """Rank 0: sends versioned, bucketed weights to every receiver of the group."""

    def __init__(self, group: SyncGroup, bucket_bytes: int, verify_checksum: bool = False):
        self.group = group
        self.bucket_bytes = int(bucket_bytes)
        self.verify_checksum = verify_checksum
        self._layout: WeightLayout | None = None
        self._published: set[str] = set()

    def layout_for(self, named: Sequence[tuple[str, torch.Tensor]], dtype: torch.dtype | None) -> WeightLayout:
        params = [(n, dtype or t.dtype, tuple(t.shape)) for n, t in named]
        layout = self._layout
        if layout is None or [(s.name, s.shape) for b in layout.buckets for s in b] != [(n, s) for n, _, s in params]:
            layout = self._layout = plan_layout(params, self.bucket_bytes)
        return layout

    def send(self, version: int, named: Sequence[tuple[str, torch.Tensor]], dtype: torch.dtype | None = None) -> SendStats:
        """Send all `named` tensors as policy `version` (cast to `dtype` on the wire if given)."""
        t0 = time.perf_counter()
        group, store = self.group, self.group.store
        layout = self.layout_for(named, dtype)
        fp = layout.fingerprint
        if fp not in self._published:
            store.set(f"layout/{fp}", layout.to_json())
            self._published.add(fp)
        store.set(f"update/{version}", json.dumps({"fingerprint": fp, "verify": self.verify_checksum}))
        receivers = range(1, group.endpoint.world_size)
        group.wait_for_keys({r: f"ready/{version}/{r}" for r in receivers}, f"get ready for version {version}")
        t_ready = time.perf_counter()

        tensors = iter(t for _, t in named)
        in_flight: list[tuple[dist.Work, torch.Tensor]] = []
        digests = []
        try:
            for specs, nbytes in zip(layout.buckets, layout.bucket_nbytes):
                buffer = pack_bucket(specs, nbytes, [next(tensors) for _ in specs], group.device)
                if self.verify_checksum:
                    digests.append(bucket_digest(buffer))
                in_flight.append((group.broadcast(buffer), buffer))
                if len(in_flight) > 1:  # double buffering: pack i+1 while i is on the wire
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
        return SendStats(version, layout.total_bytes, len(layout.buckets), time.perf_counter() - t0, t_ready - t0)


class WeightReceiver:
    """Ranks 1..N: receive the buckets of one version and yield them unpacked."""

    def __init__(self, group: SyncGroup):
        self.group = group
        self._layouts: dict[str, WeightLayout] = {}

    def receive(self, version: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """Yield one list of (name, tensor) per bucket. Each bucket has its own buffer, so
        the engine may keep views of earlier buckets until the update is finished."""
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

        def post(i: int) -> tuple[dist.Work, torch.Tensor]:
            buffer = torch.empty(layout.bucket_nbytes[i], dtype=torch.uint8, device=group.device)
            return group.broadcast(buffer), buffer

        digests = []
        pending = post(0)
        for i, specs in enumerate(layout.buckets):
            work, buffer = pending
            try:
                work.wait()
            except Exception as err:
                raise WeightSyncError(f"{group.name(rank)}: receiving version {version} failed: {err}") from err
            if i + 1 < len(layout.buckets):  # receive bucket i+1 while the engine loads bucket i
                pending = post(i + 1)
            if header["verify"]:
                digests.append(bucket_digest(buffer))
            yield unpack_bucket(specs, buffer)
        if header["verify"]:
            store.set(f"digest/{version}/{rank}", json.dumps(digests))
