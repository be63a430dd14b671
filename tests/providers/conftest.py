from __future__ import annotations

from pathlib import Path

import pytest

from tests.tinymodels import make_tiny_bert, make_tiny_llama


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"bert": make_tiny_bert(root / "bert"), "llama": make_tiny_llama(root / "llama")}
