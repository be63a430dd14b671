"""Helpers for the training program's tests: small dataset folders and a SageMaker-like directory
tree to run train.py in (as a process or in-process through `cli.main`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAIN_DIR = REPO / "containers" / "train"
TRAIN_PY = TRAIN_DIR / "train.py"
for extra in (TRAIN_DIR,):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

WORDS = [
    "the quick brown fox", "where is my order", "I want a refund", "how do I reset my password",
    "Lydia is a housecarl in Whiterun", "Ulfric Stormcloak leads the rebellion",
]


def write_jsonl(folder: Path, records: list[dict[str, str]], name: str = "data.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / name).open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return folder


def generation_records(n: int, offset: int = 0) -> list[dict[str, str]]:
    return [{"input": f"{WORDS[(i + offset) % 6]} {i % 7}", "target": WORDS[(i + offset + 1) % 6]}
            for i in range(n)]


def classification_records(n: int, offset: int = 0) -> list[dict[str, str]]:
    return [{"input": WORDS[(i + offset) % 6], "label": ["positive", "negative", "neutral"][(i + offset) % 3]}
            for i in range(n)]


def make_dataset(root: Path, task: str, sizes: tuple[int, int, int] = (48, 12, 12)) -> dict[str, Path]:
    make = classification_records if task == "classification" else generation_records
    out = {}
    for (split, n), offset in zip(zip(("train", "validation", "test"), sizes, strict=True), (0, 3, 5), strict=True):
        out[split] = write_jsonl(root / "data" / split, make(n, offset))
    return out


@dataclass
class Job:
    """A SageMaker-like tree for one run: channels, model dir, output dir, checkpoints."""

    root: Path
    channels: dict[str, Path]

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def failure(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "WORLD_SIZE", "RANK", "LOCAL_RANK"))}
        env.update({
            "SM_MODEL_DIR": str(self.model_dir), "SM_OUTPUT_DIR": str(self.output_dir),
            "SM_OUTPUT_DATA_DIR": str(self.output_dir / "data"), "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
        })
        env.update({f"SM_CHANNEL_{k.upper()}": str(v) for k, v in self.channels.items()})
        env.update(extra)
        return env

    def args(self, **hps: object) -> list[str]:
        base = {"checkpoint_dir": str(self.checkpoint_dir), "log_every": 1}
        base.update(hps)
        out: list[str] = []
        for key, value in base.items():
            out += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
        return out

    def run(self, timeout: float = 120, env: dict[str, str] | None = None, **hps: object) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(TRAIN_PY), *self.args(**hps)], env=env or self.env(),
                              capture_output=True, text=True, timeout=timeout)

    def metrics(self) -> dict:
        return json.loads((self.model_dir / "metrics.json").read_text())


def make_job(root: Path, task: str, sizes: tuple[int, int, int] = (48, 12, 12)) -> Job:
    return Job(root, make_dataset(root, task, sizes))
