"""Which samples each process trains on, and with which random augmentation.

A run must be reproducible from (seed, epoch) alone, however many processes share it and however many
loader workers each has: that is what makes `--resume` exact (a killed run restarts its epoch and
repeats it bit for bit) and a 2-process run equal to a 1-process run with the same global batch.
- `EpochSampler`: one permutation per epoch, seeded by (seed, epoch) and the same on every rank, cut to
  a whole number of global batches; rank r takes positions r, r + W, r + 2W, ... (torch's
  DistributedSampler order), so the union of the ranks' k-th batches is the k-th batch of a
  one-process run with the global batch. It yields `(epoch, index)` pairs.
- `SeededSamples`: the data set seen through those pairs; each sample's augmentation (albumentations'
  generators and torch's global generator, which the instance transforms use) is seeded by
  (seed, epoch, index), inside `torch.random.fork_rng` so the caller's random stream is untouched.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 100_003 + int(epoch)) % 2**63


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (epoch_seed(seed, epoch) * 1_000_003 + int(index)) % 2**31


def seed_transform(transform, seed: int) -> None:
    """Albumentations pipelines carry their own generators; seed them so augmentation is reproducible."""
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)


def dataset_transform(dataset):
    """The transform a data set applies (looking through wrappers that keep theirs on `.dataset`)."""
    while dataset is not None:
        if getattr(dataset, "transform", None) is not None:
            return dataset.transform
        dataset = getattr(dataset, "dataset", None)
    return None


class EpochSampler(Sampler):
    """(epoch, index) pairs of this rank's share of the epoch's shuffled global batches (module docstring)."""

    def __init__(self, num_samples: int, *, seed: int, global_batch: int, rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
        self.num_samples, self.seed, self.global_batch = int(num_samples), int(seed), int(global_batch)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def usable(self) -> int:
        """Samples per epoch over all ranks: whole global batches only (the rest waits for another epoch)."""
        return self.num_samples // self.global_batch * self.global_batch

    def __len__(self) -> int:
        return self.usable // self.world_size

    def __iter__(self):
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_samples, generator=g)[:self.usable]
        return iter([(self.epoch, int(i)) for i in order[self.rank::self.world_size]])


class SeededSamples(Dataset):
    """`dataset[index]` for `(epoch, index)` keys, its augmentation seeded by (seed, epoch, index)."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, int(seed)
        self.transform = dataset_transform(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        s = sample_seed(self.seed, epoch, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            seed_transform(self.transform, s)
            return self.dataset[index]
