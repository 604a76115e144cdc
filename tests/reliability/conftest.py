"""The imaging tests' 16-pixel cache, shared with the fault suite."""

from tests.imaging.conftest import cached

__all__ = ["cached"]
