"""Coefficient schedules over training steps (hybrids anneal mixing weights and hint lengths).

    cosine(step, total, start, end)    start + (end - start) (1 - cos(pi s/total)) / 2, s clipped to [0, total]
    warmup_cosine(step, warmup, total, peak, valley, start=0)
                                       linear start -> peak over `warmup` steps, then cosine peak -> valley
                                       over the remaining `total - warmup` steps (CHORD's mu schedule)
    linear(step, total, start, end)    start + (end - start) s/total, s clipped to [0, total]
"""

from __future__ import annotations

import math


def linear(step: int, total: int, start: float, end: float) -> float:
    s = min(max(step, 0), total)
    return start + (end - start) * s / max(1, total)


def cosine(step: int, total: int, start: float, end: float) -> float:
    s = min(max(step, 0), total)
    return start + (end - start) * (1 - math.cos(math.pi * s / max(1, total))) / 2


def warmup_cosine(step: int, warmup: int, total: int, peak: float, valley: float,
                  start: float = 0.0) -> float:
    if step < warmup:
        return linear(step, warmup, start, peak)
    return cosine(step - warmup, max(1, total - warmup), peak, valley)
