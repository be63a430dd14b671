"""What `fastuner invoke` reads from a SageMaker deployment's record: it is invocable once it names its
endpoint (there is no URL), and its adapters are a list of names (the local provider records a map)."""

from __future__ import annotations

import pytest
from rich.console import Console

from fastuner.cli.invoke import Options, find_deployment, pick_adapter, served_adapters
from fastuner.errors import UserError
from fastuner.state.model import ResourceState, State, Status


def state(**outputs) -> State:
    rs = ResourceState(address="deployment.api", kind="deployment", name="api", status=Status.READY,
                       outputs={"endpoint_name": "inv-ep-api-1a2b3c4d", "mode": "lmi",
                                "components": {"a1": "inv-ep-api-1a2b3c4d-a1"}, "adapters": ["a1"], **outputs})
    return State(project="inv", resources={"deployment.api": rs})


def test_a_sagemaker_deployment_is_invocable_by_its_endpoint_name() -> None:
    rs = find_deployment(state(), "deployment.api")
    assert served_adapters(rs.outputs) == {"a1": ""}
    quiet = Console(file=open("/dev/null", "w"))  # noqa: SIM115
    assert pick_adapter("deployment.api", Options(), served_adapters(rs.outputs), quiet) == "a1"
    with pytest.raises(UserError, match="serves no adapter 'a2'; its adapters: a1"):
        pick_adapter("deployment.api", Options(adapter="a2"), served_adapters(rs.outputs), quiet)


def test_a_deployment_still_being_created_is_not_ready() -> None:
    with pytest.raises(UserError, match="not ready yet"):
        find_deployment(state(endpoint_name=None), "deployment.api")


def test_the_local_record_still_maps_names_to_artifacts() -> None:
    assert served_adapters({"adapters": {"a1": "/artifacts/a1"}}) == {"a1": "/artifacts/a1"}
    assert served_adapters({}) == {}
