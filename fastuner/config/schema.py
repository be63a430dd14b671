"""The JSON Schema of fastuner.yaml, generated from the models (written to specs/ by `fastuner schema`)."""

from __future__ import annotations

import json

from fastuner.config.models import Config

SCHEMA_ID = "https://fastuner.dev/schemas/fastuner.schema.json"


def spec_schema() -> dict:
    schema = Config.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "fastuner.yaml",
        **schema,
    }


def spec_schema_text() -> str:
    return json.dumps(spec_schema(), indent=2, sort_keys=True) + "\n"
