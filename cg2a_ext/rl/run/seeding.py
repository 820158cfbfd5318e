"""Named seed streams: every consumer of randomness draws from its own stream of one run seed.

A stream is ``numpy.random.SeedSequence(seed, spawn_key=(crc32(name), *index))``: streams with
different names (or indices) are statistically independent, and adding a consumer never shifts
another's numbers (which seed offsets such as ``seed + 1`` did when two consumers collided).
"""
from __future__ import annotations

import zlib

import numpy as np
import torch


class SeedStreams:
    """``SeedStreams(seed).numpy("replay")``, ``.torch_generator("augment", device)``, ``.integer("episodes", 7)``."""

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = int(seed)

    def sequence(self, name: str, *index: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.seed, spawn_key=(zlib.crc32(name.encode()), *map(int, index)))

    def integer(self, name: str, *index: int, bits: int = 63) -> int:
        """A non-negative integer below 2**bits from stream ``name`` (e.g. an episode seed)."""
        word = int(self.sequence(name, *index).generate_state(1, np.uint64)[0])
        return word >> (64 - bits)

    def numpy(self, name: str, *index: int) -> np.random.Generator:
        return np.random.default_rng(self.sequence(name, *index))

    def torch_generator(self, name: str, device: torch.device | str = "cpu") -> torch.Generator:
        generator = torch.Generator(device=torch.device(device))
        generator.manual_seed(self.integer(name))
        return generator
