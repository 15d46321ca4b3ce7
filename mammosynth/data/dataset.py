"""A torch ``Dataset`` over a prepared dataset (see :mod:`mammosynth.data.prepared`)."""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import torch

from ..conditions import box_mask
from .prepared import PreparedData, label_boxes, load_prepared, row_boxes, row_conditions

__all__ = ["PreparedDataset", "to_unit_range", "from_unit_range"]


def to_unit_range(frames: np.ndarray) -> torch.Tensor:
    """uint16 frames → float32 tensor in [-1, 1] (0 → -1, 65535 → 1)."""
    return torch.from_numpy(frames.astype(np.float32)) / 32767.5 - 1.0


def from_unit_range(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """float images in [-1, 1] → uint16 numpy (clipped)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    return np.clip(np.rint((images + 1.0) * 32767.5), 0, 65535).astype(np.uint16)


class PreparedDataset(torch.utils.data.Dataset):
    """Images, lesion masks and encoded conditions from a prepared dataset.

    Each item is a dict:

    * ``image`` – float32 ``(1, H, W)`` in [-1, 1] (canonical orientation)
    * ``mask`` – float32 ``(1, H, W)``, 1 inside the boxes of the image's ``lesion`` label
      (the conditioning channel: "lesion X at box B" must mean X's boxes)
    * ``findings_mask`` – float32 ``(1, H, W)``, 1 inside every finding's box, whatever its type
    * ``birads``, ``density``, ``view``, ``laterality``, ``lesion`` – int64 class indices
      from :meth:`mammosynth.conditions.Conditions.encode` (0 = unspecified)
    * ``cancer`` – int64 0/1 (-1 if unknown); ``study_id``, ``image_id`` – str; ``index`` – int

    Args:
        root: prepared-dataset folder, or an already opened :class:`PreparedData`.
        split: ``"training"``, ``"test"`` or ``None`` for all rows.
        transform: optional callable applied to the item dict.
    """

    def __init__(self, root: str | os.PathLike | PreparedData, split: str | None = None,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self.data = root if isinstance(root, PreparedData) else load_prepared(root)
        self.rows = self.data.split(split).reset_index(drop=True)
        self.split = split
        self.transform = transform
        h, w = self.data.height, self.data.width
        # Plain per-row records: pandas row access is far too slow for a training loop.
        self._records = self.rows.to_dict("records")
        self._codes = [row_conditions(row, h, w).encode() for row in self._records]
        self._label_boxes = [label_boxes(row, h, w) for row in self._records]
        self._boxes = [row_boxes(row, h, w) for row in self._records]

    @property
    def height(self) -> int:
        return self.data.height

    @property
    def width(self) -> int:
        return self.data.width

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self._records[i]
        frame = np.asarray(self.data.images[int(row["index"])])
        item: dict[str, Any] = {
            "image": to_unit_range(frame[None]),
            "mask": torch.from_numpy(box_mask(self._label_boxes[i], self.height, self.width)[None]),
            "findings_mask": torch.from_numpy(box_mask(self._boxes[i], self.height, self.width)[None]),
            **{k: torch.tensor(v, dtype=torch.long) for k, v in self._codes[i].items()},
            "cancer": torch.tensor(-1 if row["cancer"] != row["cancer"] else int(row["cancer"]), dtype=torch.long),
            "study_id": row["study_id"],
            "image_id": row["image_id"],
            "index": int(row["index"]),
        }
        return self.transform(item) if self.transform else item
