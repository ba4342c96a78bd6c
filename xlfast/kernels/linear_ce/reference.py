"""The plain-torch definition every backend is tested against: the logits materialised, autograd backward."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                                   bias: torch.Tensor | None = None, *, ignore_index: int = -100,
                                   first_class: int = 0) -> torch.Tensor:
    """`F.cross_entropy(F.linear(x, weight[first_class:], bias), target, reduction="sum")`."""
    logits = F.linear(x, weight[first_class:], bias)
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
