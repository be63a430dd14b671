from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.invoke.fakeserver import FakeServer, Script


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def server(script: Script) -> Iterator[FakeServer]:
    with FakeServer(script) as srv:
        yield srv


