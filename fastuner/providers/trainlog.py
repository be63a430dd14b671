"""Reading the training program's log (containers/train/fastuner_train/logs.py writes it): which lines
are progress, which are warnings the user must see in apply's own output, and which are for the log
file only.

    [fastuner] INFO: loading the base model /models/bert                 progress text
    [fastuner] step=3 total_steps=12 epoch=0.25 train_loss=1.38 eta_s=9.0  progress "step 3/12 · loss 1.38 · ETA 9s"
    [fastuner] WARNING: 12 of 96 train examples ... truncated            a warning apply prints and keeps
    [transformers] WARNING: ...   [warnings] FutureWarning: ...          library noise: the log file only

The ETA is the program's own (`eta_s`, from the pace of its steps), so it stays put between two logged
steps instead of growing while the next one is awaited.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fastuner.config.duration import format_elapsed

STEP_LINE = re.compile(r"^\[fastuner\] step=(\d+) total_steps=(\d+)(.*)$")
MESSAGE_LINE = re.compile(r"^\[fastuner\] (?:rank\d+ )?(INFO|WARNING|ERROR): (.*)$")
PAIR = re.compile(r"(\w+)=(\S+)")


def parse_progress(line: str) -> dict[str, str] | None:
    m = STEP_LINE.match(line.strip())
    if not m:
        return None
    out = dict(PAIR.findall(m.group(3)))
    out["step"], out["total_steps"] = m.group(1), m.group(2)
    return out


def step_text(p: dict[str, str]) -> str:
    """"step 3/12 · loss 1.3800 · ETA 9s" from a training step line."""
    step, total = int(p["step"]), int(p["total_steps"])
    eta = p.get("eta_s")
    tail = f" · ETA {format_elapsed(float(eta))}" if eta is not None and step < total else ""
    return f"step {step}/{total} · loss {p['train_loss']}{tail}"


def read_line(line: str) -> tuple[str, str] | None:
    """("progress" or "warning", text) for a line the user reads in apply's output, else None."""
    p = parse_progress(line)
    if p is not None:
        return ("progress", step_text(p)) if "train_loss" in p else None
    m = MESSAGE_LINE.match(line.strip())
    if m is None:
        return None
    level, text = m.groups()
    return ("progress" if level == "INFO" else "warning"), text


class LogFollower:
    """Follows a growing log: each `poll()` returns, in order, what the complete lines written since
    the previous poll say to the user (every logged step, not only the latest)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def poll(self) -> list[tuple[str, str]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        events = (read_line(raw) for raw in data[:cut].decode("utf-8", "replace").splitlines())
        return [e for e in events if e is not None]


def last_step(log: Path) -> str:
    """", step 7/12" from the end of a log (for a pending run's detail in `plan`), or ""."""
    last = None
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            for raw in f.read().decode("utf-8", "replace").splitlines():
                p = parse_progress(raw)
                if p and "train_loss" in p:
                    last = p
    except FileNotFoundError:
        return ""
    return f", step {last['step']}/{last['total_steps']}" if last else ""
