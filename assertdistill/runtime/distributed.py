"""torch.distributed set-up for torchrun: ranks, the device of each, collectives, rank-0-only writing."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistributedContext:
    """Where this process stands: rank, world size, local rank (1 process: 0, 1, 0) and whether it uses CUDA."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    cpu_only: bool = False  # torchrun started more processes on this node than it has CUDA devices: gloo on CPU
    backend: str = "gloo"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, value) -> list:
        """Every process's `value`, in rank order (a one-element list in one process)."""
        if not self.enabled:
            return [value]
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        """Wait for every process (no-op in one process)."""
        if self.enabled:
            dist.barrier()

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def sum_counts(self, counts: list[int]) -> list[int]:
        """Each count summed over every process (the counts themselves in one process)."""
        if not self.enabled:
            return [int(count) for count in counts]
        tensor = torch.tensor([int(count) for count in counts], dtype=torch.int64, device=self._collective_device())
        dist.all_reduce(tensor)
        return tensor.tolist()

    def average_gradients(self, parameters) -> None:
        """Each gradient replaced by its mean over processes; a process without one adds zeros (one all-reduce per dtype)."""
        if not self.enabled:
            return
        parameters = [parameter for parameter in parameters if parameter.requires_grad]
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        for dtype in sorted({parameter.grad.dtype for parameter in parameters}, key=str):
            grads = [parameter.grad for parameter in parameters if parameter.grad.dtype == dtype]
            flat = torch.cat([grad.reshape(-1) for grad in grads])  # (sum of numel,)
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for grad in grads:
                grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
                offset += grad.numel()

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers copied into every process's module (no-op in one process)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)


def uses_cuda(processes_on_node: int, cuda_devices: int) -> bool:
    """Whether each of torchrun's processes on this node gets its own CUDA device (else all run on CPU, gloo)."""
    return cuda_devices >= processes_on_node > 0


def init_distributed() -> DistributedContext:
    """Join the process group torchrun describes (WORLD_SIZE > 1): NCCL with one CUDA device per process, else gloo."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    on_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    cuda = torch.cuda.is_available() and uses_cuda(on_node, torch.cuda.device_count())
    if cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank,
                              cpu_only=torch.cuda.is_available() and not cuda, backend=backend)


def shutdown_distributed(context: DistributedContext) -> None:
    """Leave the process group."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
