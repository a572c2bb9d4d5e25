"""vLLM side of the weight sync: a weight-transfer engine registered with vLLM as
backend "mogrpo", receiving mogrpo's bucketed protocol (mogrpo/weight_sync.py) over gloo
or NCCL and loading it with vLLM's layerwise in-place reload.

Importing this module registers the backend. vLLM builds the engine in the process that
holds the model: in one-process mode that is the rollout actor (which imports this
module); in multiprocess mode vLLM imports it through `worker_extension_cls`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from vllm.distributed.weight_transfer import WeightTransferEngine, WeightTransferEngineFactory
from vllm.distributed.weight_transfer.base import WeightTransferInitInfo, WeightTransferUpdateInfo

from mogrpo.atomic import write_folder_atomically
from mogrpo.weight_sync import SyncEndpoint, SyncGroup, WeightReceiver, WeightSyncError

BACKEND = "mogrpo"


@dataclass
class BucketedInitInfo(WeightTransferInitInfo):
    endpoint: dict  # the fields of mogrpo.weight_sync.SyncEndpoint
    rank_offset: int  # group rank of this engine's first (tensor-parallel rank 0) worker


@dataclass
class BucketedUpdateInfo(WeightTransferUpdateInfo):
    version: int


class BucketedWeightEngine(WeightTransferEngine[BucketedInitInfo, BucketedUpdateInfo]):
    """Receives every bucket of a version and loads it through `model.load_weights`
    between vLLM's `initialize_layerwise_reload` and `finalize_layerwise_reload`."""

    init_info_cls = BucketedInitInfo
    update_info_cls = BucketedUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, config, vllm_config, device, model):
        super().__init__(config, vllm_config, device, model)
        self.group: SyncGroup | None = None
        self.receiver: WeightReceiver | None = None
        self.tied = TiedModules(model)

    def init_transfer_engine(self, init_info: BucketedInitInfo) -> None:
        self.shutdown()  # leave the previous group, if any (it is re-formed when a worker is replaced)
        rank = init_info.rank_offset + self.parallel_config.rank
        self.group = SyncGroup(SyncEndpoint(**init_info.endpoint), rank)
        self.receiver = WeightReceiver(self.group)

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        self.tied.start_update()
        initialize_layerwise_reload(self.model)

    def update_weights(self, update_info: dict) -> None:
        # The base class ends with torch.accelerator.synchronize(), which raises on a
        # CPU-only torch; synchronise only where there is a device to wait for.
        self.receive_weights(self.parse_update_info(update_info))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def receive_weights(self, update_info: BucketedUpdateInfo) -> None:
        if self.receiver is None:
            raise WeightSyncError("weight sync used before init_weight_transfer_engine")
        self.model.load_weights(self._stream(update_info.version))

    def _stream(self, version: int) -> Iterator[tuple[str, torch.Tensor]]:
        """Every received tensor, in order, for one streaming `load_weights` call (one walk
        of vLLM's loader per update instead of one per bucket)."""
        for bucket in self.receiver.receive(version):
            if self.device.type != bucket[0][1].device.type:
                bucket = [(name, tensor.to(self.device)) for name, tensor in bucket]
            yield from bucket
            # The loader takes the next tensor only after this one is loaded, so the whole
            # bucket is in place here (on the first pull of the next bucket or at the end).
            self.tied.loaded(name for name, _ in bucket)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)
        self.tied.finish_update()

    def shutdown(self) -> None:
        if self.group is not None:
            self.group.close()
        self.group = self.receiver = None


class TiedModules:
    """Modules that share a weight with another module (a tied LM head and embedding).

    During a reload only the module whose name the checkpoint carries receives the weight;
    vLLM never re-processes the others, and on CPU that processing builds a packed GEMM
    copy, so a tied LM head would keep serving the old weights. Each follower is
    re-processed once, as soon as its leader's weight has loaded (while later buckets
    are still on the wire), or at the end of the update for any not yet refreshed."""

    def __init__(self, model: torch.nn.Module):
        by_weight: dict[int, list[tuple[str, torch.nn.Module]]] = {}
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.nn.Parameter) and hasattr(module, "quant_method"):
                by_weight.setdefault(id(weight), []).append((name, module))
        self.sets = [members for members in by_weight.values() if len(members) > 1]
        self.pending: set[int] = set()

    def start_update(self) -> None:
        self.pending = set(range(len(self.sets)))

    def loaded(self, names) -> None:
        if not self.pending:
            return
        names = set(names)
        for i in list(self.pending):
            leaders = {f"{name}.weight" for name, _ in self.sets[i]} & names
            if leaders:
                self._refresh(i, skip={leader.removesuffix(".weight") for leader in leaders})

    def finish_update(self) -> None:
        for i in list(self.pending):
            self._refresh(i, skip=set())

    def _refresh(self, i: int, skip: set[str]) -> None:
        for name, module in self.sets[i]:
            if name not in skip:  # the leader was processed by vLLM's own reload
                module.quant_method.process_weights_after_loading(module)
        self.pending.discard(i)


class WorkerExtension:
    """Named as vLLM's `worker_extension_cls` so that a multiprocess engine imports this
    module (and so registers the backend) in its worker processes."""

    def receive_adapter(self, version: int, directory: str, peft_kwargs: dict) -> str:
        """Receive LoRA adapters as `version` and write them as a peft adapter folder
        (safetensors + adapter_config.json), which vLLM's LoRA manager loads."""
        engine = self.weight_transfer_engine
        tensors = {}
        for bucket in engine.receiver.receive(version):
            tensors.update((name, tensor.to("cpu", copy=True)) for name, tensor in bucket)
        if engine.parallel_config.rank == 0:  # tensor-parallel ranks share the folder
            write_adapter(Path(directory), tensors, peft_kwargs)
        return directory


def write_adapter(directory: Path, tensors: dict[str, torch.Tensor], peft_kwargs: dict) -> Path:
    """A peft adapter folder, written atomically."""
    from safetensors.torch import save_file

    def fill(tmp: Path) -> None:
        save_file(tensors, tmp / "adapter_model.safetensors", metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **peft_kwargs}))

    return write_folder_atomically(directory, fill)


def register() -> None:
    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, BucketedWeightEngine)


register()
