"""Fixtures for the training program: tiny models built once per session (tests/tinymodels.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.jobs import TRAIN_DIR  # noqa: F401  (puts containers/train on sys.path first)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.tinymodels import make_tiny_bert, make_tiny_llama

    root = tmp_path_factory.mktemp("models")
    return {
        "llama_chat": make_tiny_llama(root / "llama_chat", chat_template=True, max_positions=256),
        "llama_plain": make_tiny_llama(root / "llama_plain", chat_template=False, max_positions=256),
        "bert": make_tiny_bert(root / "bert", max_positions=64),
    }
