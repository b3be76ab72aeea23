"""A first-in-first-out buffer of the student's sampled records (DistiLLM's replay buffer), checkpointable as tensors."""

from __future__ import annotations

import random
from collections import deque

import torch

from ..core.constants import IGNORE_INDEX


class ReplayBuffer:
    """Up to `capacity` (source ids, sampled target ids) pairs, each unpadded 1-D; the oldest leave first."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"a replay buffer holds at least one record, not {capacity}")
        self.capacity = capacity
        self.entries: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> None:
        """Store each row of a batch: its source (B, S) without padding and its target (B, L) without -100."""
        for source, mask, target in zip(input_ids.cpu(), attention_mask.cpu(), labels.cpu()):
            self.entries.append((source[mask.bool()].clone(), target[target != IGNORE_INDEX].clone()))

    def draw(self, count: int, seed: int, pad_token_id: int, device: torch.device) -> dict:
        """min(count, len) distinct records, chosen by `seed`, as a batch: input_ids, attention_mask (B', S'), labels (B', L')."""
        if not self.entries:
            raise ValueError("cannot draw from an empty replay buffer")
        chosen = random.Random(seed).sample(range(len(self.entries)), k=min(count, len(self.entries)))
        sources = [self.entries[index][0] for index in chosen]
        targets = [self.entries[index][1] for index in chosen]
        source_length = max(1, max(len(source) for source in sources))
        target_length = max(1, max(len(target) for target in targets))
        input_ids = torch.full((len(chosen), source_length), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chosen), source_length), dtype=torch.long)
        labels = torch.full((len(chosen), target_length), IGNORE_INDEX, dtype=torch.long)
        for row, (source, target) in enumerate(zip(sources, targets)):
            input_ids[row, : len(source)] = source
            attention_mask[row, : len(source)] = 1
            labels[row, : len(target)] = target
        return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
                "labels": labels.to(device)}

    def state_dict(self) -> dict:
        """The entries as lists of tensors (loads with torch.load(weights_only=True))."""
        return {"capacity": self.capacity, "sources": [source for source, _ in self.entries],
                "targets": [target for _, target in self.entries]}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() gave, refusing another capacity."""
        if state["capacity"] != self.capacity:
            raise ValueError(f"a replay buffer of {state['capacity']} records cannot be restored into one of "
                             f"{self.capacity}")
        self.entries = deque(zip(state["sources"], state["targets"]), maxlen=self.capacity)
