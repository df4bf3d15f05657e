"""Learning-rate schedules that ``torch.optim.lr_scheduler`` has no class for (``model.scheduler._target_``)."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LRScheduler


class InverseTimeDecay(LRScheduler):
    """``lr = base_lr / (1 + decay * step)``, stepped every optimizer step: AdaIN's schedule
    (Huang and Belongie 2017's code: lr 1e-4, decay 5e-5, so the rate halves by step 20,000).

    Its state is the step count alone, so a resumed run continues the same curve."""

    def __init__(self, optimizer: torch.optim.Optimizer, decay: float = 5e-5, last_epoch: int = -1) -> None:
        if decay < 0:
            raise ValueError(f"decay must be >= 0, got {decay}")
        self.decay = float(decay)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [base / (1.0 + self.decay * self.last_epoch) for base in self.base_lrs]
