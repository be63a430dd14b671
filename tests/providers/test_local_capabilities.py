"""What the CLI does to running resources, on the local provider: logs that follow a live program, a
dataset's stored split read back. (Invoking an endpoint: tests/invoke.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from fastuner.providers.base import ProviderError
from fastuner.providers.local.datasets import LocalDatasets
from fastuner.providers.local.processes import read_log
from fastuner.state.model import ResourceState


def test_a_followed_log_is_read_until_the_program_ends(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("step 1\n")
    polls = iter([True, False])  # running at the first empty read, ended at the second

    def running() -> bool:
        alive = next(polls)
        with open(log, "a") as f:
            f.write("step 2\n" if alive else "done\n")
        return alive

    assert "".join(read_log("adapter.a", log, running, follow=True, poll=0)) == "step 1\nstep 2\ndone\n"
    assert "".join(read_log("adapter.a", log, lambda: pytest.fail("not asked"), follow=False)) == \
        "step 1\nstep 2\ndone\n"


def test_a_missing_log_says_where_it_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match=r"no log yet for adapter\.a \(expected .*train\.log\)"):
        read_log("adapter.a", tmp_path / "train.log", lambda: True, follow=True)


def test_a_stored_split_reads_back_byte_for_byte_and_a_lost_one_says_how_to_recreate_it(tmp_path: Path) -> None:
    datasets = LocalDatasets(tmp_path / ".fastuner", tmp_path)
    data = b'{"input":"a","label":"x"}\n'
    rs = ResourceState(address="dataset.d", kind="dataset", name="d",
                       outputs={"splits": {"test": {"key": datasets.store.put_bytes(data), "rows": 1}}})
    assert datasets.read_split(rs, "test") == data
    with pytest.raises(ProviderError, match=r"dataset\.d's train split \(None\) is missing") as info:
        datasets.read_split(rs, "train")
    assert info.value.hint == "Re-create it: fastuner apply --replace dataset.d"


def test_the_programs_start_with_the_environment_the_composition_root_was_handed(tmp_path) -> None:
    """The training and serving programs start with the environment given to the provider (what
    `main(environ=...)` hands the composition root), not the process's."""
    from fastuner.config.loader import load_spec
    from fastuner.providers.local import local_provider

    (tmp_path / "fastuner.yaml").write_text("version: 1\nproject: demo\n")
    provider = local_provider(load_spec(tmp_path / "fastuner.yaml"), "default", {"HF_HOME": "/handed/in"})
    for kind in ("adapter", "deployment"):
        assert provider.resources[kind].env == {"HF_HOME": "/handed/in"}
