"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2_dir():
    """The embedded default model as a Hugging Face directory (downloaded once, cached)."""
    from shearing.assets import smollm2

    return smollm2()
