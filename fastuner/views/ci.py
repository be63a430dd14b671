"""CI configuration rendered from a template (`templates/github-workflow.yml.j2`), fed a dict of strings.

StrictUndefined: a missing value is an error, never an empty string in someone's workflow. Values reach
YAML only through the `yaml` filter, which writes an ASCII JSON string (always a valid YAML scalar).
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from fastuner.views.markdown import templates_dir

GITHUB_TEMPLATE = "github-workflow.yml.j2"


def _yaml_scalar(value: Any) -> str:
    return json.dumps(str(value), ensure_ascii=True)


def render_github_workflow(settings: dict[str, Any]) -> str:
    env = Environment(loader=FileSystemLoader(templates_dir()), undefined=StrictUndefined, autoescape=False,
                      keep_trailing_newline=True)
    env.filters["yaml"] = _yaml_scalar
    return env.get_template(GITHUB_TEMPLATE).render(**settings)
