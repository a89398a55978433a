"""Argument types shared by the stages' command lines and `stellar`'s: one wording of each refusal."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def fraction(closed: bool) -> Callable[[str], float]:
    """An argparse type: a number within (0, 1), or [0, 1] when `closed`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (0.0 <= value <= 1.0 if closed else 0.0 < value < 1.0):
            raise argparse.ArgumentTypeError(f"{value:g}: must be within {'[0, 1]' if closed else '(0, 1)'}")
        return value
    return parse
