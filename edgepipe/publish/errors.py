"""The publish layer's own failure: a publish that cannot succeed as asked."""

from __future__ import annotations


class PublishError(RuntimeError):
    """A publish that cannot succeed as asked (not worth retrying)."""
