"""What the property-based tests share: Hypothesis settings fixed for CI, a wall-clock limit per example, and a
fingerprint of a folder to prove that a failed load changed no file."""

from __future__ import annotations

import hashlib
import os
import signal
from contextlib import contextmanager

from hypothesis import HealthCheck, Phase, settings

# derandomize: the same examples on every run, so CI is deterministic; no example database is written
# no "explain" phase: it imports libcst to say which lines failing examples ran, seconds that CI does not need
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
EXAMPLE_SECONDS = 30


def fuzz(examples: int) -> settings:
    """FUZZ with this many examples (sized so that every suite takes seconds, not minutes, on CI)."""
    return settings(FUZZ, max_examples=examples)  # one example that runs longer than this is a hang


@contextmanager
def time_limit(seconds: float = EXAMPLE_SECONDS):
    """Raise TimeoutError in this (main) thread if the block runs longer than `seconds` (a Python-level loop is
    interrupted; hypothesis then reports the example that hung)."""

    def expired(signum, frame):
        raise TimeoutError(f"the example ran for more than {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fingerprint(folder) -> dict:
    """Every file under `folder` -> (size, sha256, mode): equal before and after means nothing was written."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = (
                    os.path.getsize(path),
                    hashlib.sha256(f.read()).hexdigest(),
                    os.stat(path).st_mode,
                )
    return found
