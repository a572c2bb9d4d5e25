"""How the weights of one policy version are laid out in buckets on the wire: which
tensor lies at which offset of which bucket, how buckets are planned (packed, or views of
a storage the tensors already share), packed and unpacked. Pure torch; the transport and
the protocol around it are in mogrpo/weight_sync.py."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

ALIGN = 64  # bytes; every tensor starts at an offset that any dtype view accepts
MAX_GAP = 4096  # bytes of padding between neighbours that a storage-view bucket may carry along

Placement = tuple[int, int]  # (storage key, byte offset) of a tensor already in wire dtype


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
    """Which tensor lies where in which bucket. Equal layouts have equal fingerprints.
    `sources` is the sender's own note of buckets that are views of a storage (key, start
    byte); it never goes on the wire."""

    buckets: tuple[tuple[TensorSpec, ...], ...]
    bucket_nbytes: tuple[int, ...]
    sources: tuple[Placement | None, ...] = field(default=(), compare=False)

    @property
    def total_bytes(self) -> int:
        return sum(spec.nbytes for bucket in self.buckets for spec in bucket)

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


def plan_layout(
    params: Sequence[tuple[str, torch.dtype, Sequence[int]]],
    bucket_bytes: int,
    placements: Sequence[Placement | None] | None = None,
) -> WeightLayout:
    """Put parameters, in order, into buckets of at most `bucket_bytes` (a larger tensor
    gets a bucket of its own). A run of tensors with `placements` in one storage, each
    starting at most MAX_GAP bytes after the previous one ends, becomes a bucket that is a
    view of the storage (offsets follow the storage); the others are packed at aligned
    offsets."""
    placements = placements or [None] * len(params)
    buckets: list[list[TensorSpec]] = []
    sizes: list[int] = []
    sources: list[Placement | None] = []
    for (name, dtype, shape), place in zip(params, placements, strict=True):
        nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        source = sources[-1] if buckets else None
        if place is None:
            offset = -(-sizes[-1] // ALIGN) * ALIGN if buckets else 0
            fits = buckets and source is None and offset + nbytes <= bucket_bytes
            new_source = None
        else:
            key, at = place
            offset = at - source[1] if source is not None else -1
            fits = (buckets and source is not None and source[0] == key
                    and 0 <= offset - sizes[-1] <= MAX_GAP and offset + nbytes <= bucket_bytes)
            new_source = (key, at // ALIGN * ALIGN)  # keeps the storage's own alignment
        if not fits:
            buckets.append([])
            sizes.append(0)
            sources.append(new_source)
            offset = 0 if new_source is None else place[1] - new_source[1]
        buckets[-1].append(TensorSpec(name, str(dtype).removeprefix("torch."), tuple(shape), offset, nbytes))
        sizes[-1] = offset + nbytes
    if not buckets:
        raise WeightSyncError("no parameters to send")
    return WeightLayout(tuple(tuple(b) for b in buckets), tuple(sizes), tuple(sources))


def storage_placements(tensors: Sequence[torch.Tensor], dtypes: Sequence[torch.dtype], device: torch.device
                       ) -> tuple[list[Placement | None], dict[int, torch.Tensor]]:
    """Where each tensor already lies, in its wire dtype on the wire's device, inside a
    storage it shares with other tensors; and a flat uint8 view of each such storage."""
    keys = [
        t.untyped_storage().data_ptr() if t.dtype == d and t.device == device and t.is_contiguous() and t.numel() else None
        for t, d in zip(tensors, dtypes, strict=True)
    ]
    counts = Counter(keys)
    shared = {k for k, n in counts.items() if k is not None and n > 1}
    placements: list[Placement | None] = []
    storages: dict[int, torch.Tensor] = {}
    for t, key in zip(tensors, keys):
        if key in shared:
            placements.append((key, t.storage_offset() * t.element_size()))
            if key not in storages:
                storages[key] = torch.empty(0, dtype=torch.uint8, device=device).set_(t.untyped_storage())
        else:
            placements.append(None)
    return placements, storages


def pack_bucket(specs: Sequence[TensorSpec], nbytes: int, tensors: Sequence[torch.Tensor], device,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Copy `tensors` (matching `specs`) into one contiguous uint8 buffer (`out` if given)."""
    buffer = torch.empty(nbytes, dtype=torch.uint8, device=device) if out is None else out[:nbytes]
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
