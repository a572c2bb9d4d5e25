"""vLLM side of the weight sync: a weight-transfer engine registered with vLLM as
backend "mogrpo", receiving mogrpo's bucketed protocol (mogrpo/weight_sync.py) over gloo
or NCCL and loading it with vLLM's layerwise in-place reload.

Importing this module registers the backend. vLLM builds the engine in the process that
holds the model: in one-process mode that is the rollout actor (which imports this
module); in multiprocess mode vLLM imports it through `worker_extension_cls`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from vllm.distributed.weight_transfer import WeightTransferEngine, WeightTransferEngineFactory
from vllm.distributed.weight_transfer.base import WeightTransferInitInfo, WeightTransferUpdateInfo

from mogrpo.weight_sync import SyncEndpoint, SyncGroup, WeightReceiver, WeightSyncError

BACKEND = "mogrpo"


@dataclass
class BucketedInitInfo(WeightTransferInitInfo):
    transport: str
    master_addr: str
    master_port: int
    world_size: int
    timeout_s: float
    rank_offset: int  # group rank of this engine's first (tensor-parallel rank 0) worker
    peer_names: list[str] = field(default_factory=list)
    group_name: str = "weights"


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

    def init_transfer_engine(self, init_info: BucketedInitInfo) -> None:
        endpoint = SyncEndpoint(
            transport=init_info.transport,
            master_addr=init_info.master_addr,
            master_port=init_info.master_port,
            world_size=init_info.world_size,
            timeout_s=init_info.timeout_s,
            peer_names=init_info.peer_names,
            group_name=init_info.group_name,
        )
        rank = init_info.rank_offset + self.parallel_config.rank
        self.group = SyncGroup(endpoint, rank)
        self.receiver = WeightReceiver(self.group)

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

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
        for bucket in self.receiver.receive(update_info.version):
            if self.device.type != bucket[0][1].device.type:
                bucket = [(name, tensor.to(self.device)) for name, tensor in bucket]
            self.model.load_weights(bucket)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)
        refresh_tied_modules(self.model)

    def shutdown(self) -> None:
        if self.group is not None:
            self.group.close()
        self.group = self.receiver = None


def refresh_tied_modules(model: torch.nn.Module) -> None:
    """Re-run weight post-processing on modules that share a weight with another module.

    With tied embeddings the LM head holds the embedding's Parameter but receives no
    weights of its own during a reload, so vLLM never re-processes it; on CPU that
    processing builds a packed GEMM copy, which would keep serving the old head."""
    sharing: dict[int, list[torch.nn.Module]] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.nn.Parameter) and hasattr(module, "quant_method"):
            sharing.setdefault(id(weight), []).append(module)
    for modules in sharing.values():
        if len(modules) > 1:
            for module in modules:
                module.quant_method.process_weights_after_loading(module)


class WorkerExtension:
    """Named as vLLM's `worker_extension_cls` so that a multiprocess engine imports this
    module (and so registers the backend) in its worker processes."""

    def probe_transport(self, nbytes: int) -> int:
        """Receive one raw broadcast of `nbytes` over the sync group (the benchmark's
        reference for what the wire alone costs)."""
        group = self.weight_transfer_engine.group
        buffer = torch.empty(nbytes, dtype=torch.uint8, device=group.device)
        group.broadcast(buffer).wait()
        return nbytes


def register() -> None:
    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, BucketedWeightEngine)


register()
