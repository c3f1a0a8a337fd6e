"""Where and how the engine runs: the device, the numeric precision, and PyTorch's own distributed engine.

One `Runtime` carries what the training, evaluation and prediction loops need to know about it:
- device: `auto` (CUDA when available, else CPU), `cpu`, `cuda`, `cuda:N`, `mps`; under torchrun each
  process takes the GPU of its local rank;
- precision: `fp32`, `bf16` or `fp16` autocast on the device's type (fp16 trains with a gradient scaler);
- distribution: with `torchrun` (WORLD_SIZE > 1 in the environment) the process group is initialised
  from the variables torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; multi-node
  through its rendezvous, nothing here assumes one node): `nccl` on CUDA, `gloo` on CPU.
Rank 0 alone writes files and prints; the others compute. The pattern follows timm's train.py and
torchvision's references/segmentation/utils.py (init_distributed_mode).
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import SeglabError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str | torch.device | None = "auto", *, local_rank: int = 0) -> torch.device:
    """The torch.device a `--device` value names; a device that is not there is a one-line error."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise SeglabError(f"--device: expected auto, cpu, cuda, cuda:N or mps, got {spec!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SeglabError(f"--device {spec}: CUDA is not available in this PyTorch build "
                              f"(torch {torch.__version__}); use --device cpu")
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise SeglabError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device("cuda", index)
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SeglabError(f"--device {spec}: Apple MPS is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise SeglabError(f"--device: expected auto, cpu, cuda, cuda:N or mps, got {spec!r}")
    return device


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise SeglabError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def env_world() -> tuple[int, int, int]:
    """(rank, local rank, world size) from the variables torchrun sets; (0, 0, 1) without them."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                int(os.environ.get("WORLD_SIZE", 1)))
    except ValueError as e:
        raise SeglabError(f"RANK / LOCAL_RANK / WORLD_SIZE must be integers ({e})") from None


@dataclass
class Runtime:
    """Device, precision and this process's place in a distributed run (rank 0 of 1 without torchrun)."""
    device: torch.device
    precision: str = "fp32"
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def create(cls, device: str | torch.device | None = "auto", precision: str = "fp32") -> Runtime:
        """The runtime of this process: joins the process group when torchrun started it (once)."""
        rank, local_rank, world = env_world()
        dev = resolve_device(device, local_rank=local_rank)
        if world > 1 and not dist.is_initialized():
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            backend = "nccl" if dev.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30),
                                    **({"device_id": dev} if dev.type == "cuda" else {}))
        return cls(device=dev, precision=check_precision(precision), rank=rank, local_rank=local_rank,
                   world_size=world)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None for fp32)."""
        return _DTYPES.get(self.precision)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision autocast on this device's type (a no-op context for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16 gradients underflow without loss scaling; bf16 and fp32 get a disabled scaler."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def to_device(self, obj):
        """Tensors (in dicts, lists and tuples) moved to the device; pinned + non-blocking on CUDA."""
        if isinstance(obj, torch.Tensor):
            return obj.to(self.device, non_blocking=self.device.type == "cuda")
        if isinstance(obj, dict):
            return {k: self.to_device(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.to_device(v) for v in obj)
        return obj

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def shard(self, n: int) -> range:
        """This rank's share of n items (round robin), e.g. the validation images it evaluates."""
        return range(self.rank, n, self.world_size)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_object(self, obj):
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj) -> list:
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank, so sharded validation and the
        saved model agree."""
        if self.distributed:
            for buf in module.buffers():
                dist.broadcast(buf.data, src=0)

    def describe(self) -> str:
        where = str(self.device) + (f" ({torch.cuda.get_device_name(self.device)})" if self.device.type == "cuda" else "")
        s = f"{where}, {self.precision}"
        return s + (f", {self.world_size} processes" if self.world_size > 1 else "")
