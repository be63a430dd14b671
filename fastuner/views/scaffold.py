"""What `fastuner init` writes, rendered from `templates/init/`: the commented fastuner.yaml
(`fastuner.yaml.j2`, fed a dict of checked values) and each task's sample dataset (`samples/<task>.jsonl`,
copied as it is).

StrictUndefined: a missing value is an error here, never a blank in someone's spec.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from fastuner.views.markdown import templates_dir

SPEC_TEMPLATE = "init/fastuner.yaml.j2"


def render_spec(settings: dict[str, Any]) -> str:
    env = Environment(loader=FileSystemLoader(templates_dir()), undefined=StrictUndefined, autoescape=False,
                      keep_trailing_newline=True)
    return env.get_template(SPEC_TEMPLATE).render(**settings)


def sample_dataset(task: str) -> str:
    """The sample rows of a task (JSONL), as shipped."""
    return (templates_dir() / "init" / "samples" / f"{task}.jsonl").read_text("utf-8")
