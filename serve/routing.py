"""A/B assignment: a stable hash of the assignment key picks the variant, so the same user always
sees the same variant while the weights stay put, and the realised split follows the weights.

Hand-written because it is a few lines: Serve has no weighted traffic split of its own any more
(NOTES-libraries: `set_traffic` is gone), and an experimentation SDK would be a network service.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

VARIANTS = ("control", "treatment")


def bucket(key: str, salt: str) -> float:
    """A uniform number in [0, 1) that depends only on (salt, key)."""
    digest = hashlib.blake2b(f"{salt}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign(key: str, weights: Mapping[str, float], salt: str) -> str:
    """The variant for `key`: control takes [0, w_control), treatment the rest."""
    control = weights.get("control", 1.0)
    if weights.get("treatment", 0.0) <= 0:
        return "control"
    return "control" if bucket(key, salt) < control else "treatment"
