"""Who holds which data: the data-parallel size and rank, and the one replica that speaks for a tensor-parallel group.

Under tensor parallelism the ranks of a group share one model and answer the same batches, so only the data-parallel
rank and size deal batches, and only one rank per group (its tensor-parallel rank 0, the `leader`) stores, gathers
and counts the answers. Every other strategy has groups of one: each rank is its own leader.
"""

from typing import Any, Optional

from torch.distributed.device_mesh import DeviceMesh

TENSOR_DIM = "tensor_parallel"  # Lightning's ModelParallelStrategy names its mesh dimensions so


def tensor_parallel_mesh(trainer: Any) -> Optional[DeviceMesh]:
    """The strategy's tensor-parallel sub-mesh, when it has one of more than one rank."""
    mesh = getattr(getattr(trainer, "strategy", None), "_device_mesh", None)
    if mesh is None or TENSOR_DIM not in (mesh.mesh_dim_names or ()):
        return None
    tensor = mesh[TENSOR_DIM]
    return tensor if tensor.size() > 1 else None


def data_parallel(trainer: Any) -> tuple[int, int]:
    """(number of data-parallel replicas, this rank's replica) as the strategy deals data; (1, 0) without a trainer."""
    if trainer is None:
        return 1, 0
    kwargs = getattr(trainer, "distributed_sampler_kwargs", None) or {}
    world, rank = getattr(trainer, "world_size", 1), getattr(trainer, "global_rank", 0)
    return int(kwargs.get("num_replicas", world)), int(kwargs.get("rank", rank))


def is_leader(trainer: Any) -> bool:
    """Whether this rank speaks for its tensor-parallel group (stores, gathers, counts its answers)."""
    tensor = tensor_parallel_mesh(trainer)
    return tensor is None or tensor.get_local_rank() == 0
