"""Combining a streaming metric across torch.distributed ranks."""
from __future__ import annotations


def merge_across_ranks(metric):
    """Gather every rank's `metric.state()` and `_merge_state` the others' into `metric` (a no-op
    unless torch.distributed is initialised with several ranks); returns `metric`. The metric's state
    must be picklable; call once, after the last update."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        states = [None] * dist.get_world_size()
        dist.all_gather_object(states, metric.state())
        for rank, state in enumerate(states):
            if rank != dist.get_rank():
                metric._merge_state(state)
    return metric
