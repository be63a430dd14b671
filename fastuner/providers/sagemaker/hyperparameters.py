"""The training program's settings as a SageMaker job's hyperparameters, exactly as the SageMaker Python
SDK sends them: every value JSON-encoded into a string (`json.dumps`: "3.0", "true", "null",
'"all-linear"', '["q_proj", "v_proj"]').

In the job, the training toolkit of the Hugging Face image JSON-decodes each value, keeps the
`sagemaker_*` keys for itself and puts the rest on the program's command line with `str()` — a list
arrives as `['q_proj', 'v_proj']`, a boolean as `True`, a null as an empty string — and in `SM_HPS` as
JSON; the program's settings parser reads all of these (containers/train/fastuner_train/settings.py).

SageMaker takes at most 100 hyperparameters, keys of 256 characters and values of 2,500. A setting
that does not fit (a long label list) travels instead in a JSON file delivered as the `config` channel;
the `config` hyperparameter names the file, which the program resolves against `SM_CHANNEL_CONFIG`.
Settings from the file rank below hyperparameters, and no key is in both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_ENTRIES = 100
MAX_KEY = 256
MAX_VALUE = 2500
CONFIG_CHANNEL = "config"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Hyperparameters:
    values: dict[str, str]  # what CreateTrainingJob sends
    overflow: dict[str, Any] = field(default_factory=dict)  # settings for the config file (empty: no file)


def encode(value: Any) -> str:
    """One hyperparameter value as the SageMaker Python SDK encodes it."""
    return json.dumps(value)


def make_hyperparameters(sagemaker: dict[str, Any], settings: dict[str, Any]) -> Hyperparameters:
    """`sagemaker`: the toolkit's own keys (`sagemaker_program`, ...), which always fit; `settings`: the
    program's (training_config's). The settings that do not fit SageMaker's limits go to `overflow`,
    the longest first when there are too many."""
    values = {key: encode(value) for key, value in sagemaker.items()}
    for key, text in values.items():
        if len(key) > MAX_KEY or len(text) > MAX_VALUE:
            raise ValueError(f"the hyperparameter {key} does not fit SageMaker's limits")
    encoded = {key: encode(value) for key, value in settings.items()}
    too_long = {k for k, text in encoded.items() if len(k) > MAX_KEY or len(text) > MAX_VALUE}
    fitting = sorted((k for k in encoded if k not in too_long), key=lambda k: (len(encoded[k]), k))
    room = MAX_ENTRIES - len(values)
    if too_long or len(fitting) > room:
        room -= 1  # for `config`, which names the file
        if room < 0:
            raise ValueError("too many SageMaker hyperparameters")
        fitting, moved = fitting[:room], fitting[room:]
        too_long.update(moved)
    values.update({k: encoded[k] for k in sorted(fitting)})
    overflow = {k: settings[k] for k in sorted(too_long)}
    if overflow:
        values[CONFIG_CHANNEL] = encode(CONFIG_FILE)
    return Hyperparameters(values, overflow)


def config_file(overflow: dict[str, Any]) -> bytes:
    """The config channel's file: the same bytes for the same settings (content-addressed in S3)."""
    return (json.dumps(overflow, sort_keys=True, indent=1) + "\n").encode()


def decode(values: dict[str, str]) -> dict[str, Any]:
    """A job's hyperparameters as the toolkit reads them (a value that is not JSON stays a string)."""
    out: dict[str, Any] = {}
    for key, text in values.items():
        try:
            out[key] = json.loads(text)
        except (TypeError, ValueError):
            out[key] = text
    return out
