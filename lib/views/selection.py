"""What an analysis page has chosen: a run and one of its heatmap stores (the pages add their own settings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StoreSelection:
    """A run of a workspace, the heatmap stores of its checkpoint with their labels, and the one picked."""

    ws: object
    run: object
    sha: str
    stores: list
    labels: list[str]
    pick: int

    @property
    def store(self):
        return self.stores[self.pick]

    @property
    def method_label(self) -> str:
        return self.labels[self.pick]
