"""Where a mutator's decisions come from: a seeded `random.Random` (the runner: fast, replayable by seed) or a
Hypothesis `data` object (the tests: Hypothesis records each decision and shrinks a failing case to the fewest,
smallest ones). Mutators only ever ask a `Choices` object, so the same mutation code serves both.

Hypothesis is a test dependency: it is imported only when a `HypothesisChoices` is made.
"""
from __future__ import annotations

import math
import random
from typing import Any, Sequence, TypeVar

T = TypeVar("T")

# Values that break code written for well-formed input: zero, negative, off by one around powers of two,
# sizes past int32/int64, and one that would need petabytes if taken as an element count.
INTERESTING_INTS = (0, 1, -1, 2, -2, 3, 7, 255, 256, -128, 65535, 2**31 - 1, 2**31, -2**31, 2**32, 2**53,
                    2**63 - 1, -2**63, 10**5, 10**10, 10**15)
INTERESTING_FLOATS = (0.0, -0.0, 0.5, -1.5, 1e-45, 1e38, -1e38, 1e308, math.inf, -math.inf, math.nan)


class Choices:
    """The decisions a mutator makes. Subclasses provide `integer` and `choice`; the rest derive from them."""

    def integer(self, low: int, high: int) -> int:
        """An int in [low, high]."""
        raise NotImplementedError

    def choice(self, options: Sequence[T]) -> T:
        raise NotImplementedError

    def boolean(self) -> bool:
        return self.integer(0, 1) == 1

    def weighted(self, options: Sequence[tuple[int, T]]) -> T:
        """One of `options` ((weight, value) pairs), picked with probability proportional to its weight."""
        total = sum(weight for weight, _ in options)
        pick = self.integer(0, total - 1)
        for weight, value in options:
            if pick < weight:
                return value
            pick -= weight
        raise AssertionError("unreachable: pick < total")

    def interesting_int(self, near: Any = None) -> int:
        """An int from INTERESTING_INTS, or (half the time, where `near` is a moderate number) one next to `near`,
        its negation, double or thousandfold."""
        moderate = isinstance(near, (int, float)) and not isinstance(near, bool) and math.isfinite(near) \
            and abs(near) < 2**40
        if moderate and self.boolean():
            near = int(near)
            return near + self.choice((-1, 1, -near, near, near * 1000))
        return self.choice(INTERESTING_INTS)

    def interesting_float(self) -> float:
        return self.choice(INTERESTING_FLOATS)

    def text(self, pool: Sequence[str] = ()) -> str:
        """A string: one of `pool` (names the input already uses) or an odd one."""
        odd = ("", " ", "x", "\n", "a b", "../" * 3 + "etc/passwd", "ÿ\u2028", "x" * 300, "%s%n", "0", "-1",
               "import os", "t0\nimport this")
        if pool and self.boolean():
            return self.choice(pool)
        return self.choice(odd)

    def blob(self, max_len: int = 64) -> bytes:
        return bytes(self.integer(0, 255) for _ in range(self.integer(0, max_len)))


class RandomChoices(Choices):
    """Decisions from a seeded `random.Random`: the same seed gives the same mutations."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def blob(self, max_len: int = 64) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, max_len))


class HypothesisChoices(Choices):
    """Decisions drawn from Hypothesis (`@given(st.data())`), which then shrinks a failing case."""

    def __init__(self, data: Any):
        from hypothesis import strategies  # a test dependency: imported only here

        self.data, self.st = data, strategies

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(self.st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return options[self.data.draw(self.st.integers(0, len(options) - 1))]
