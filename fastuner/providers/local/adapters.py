"""Adapters on the local provider: the training program (containers/train) run as a detached process
in a SageMaker-like folder tree, so the very same program runs unchanged as a SageMaker job.

    <work>/runs/<run name>/            the run name is the adapter's deterministic physical name
        input/data/{train,validation,test}/<split>.jsonl   (hard links into the object store)
        input/config/hyperparameters.json                  (the full config; passed as --config)
        input/config/{inputdataconfig,resourceconfig}.json (as SageMaker writes them: sagemaker_tree.py)
        model/        SM_MODEL_DIR: adapter_config.json, adapter_model.safetensors, fastuner.json
        output/       SM_OUTPUT_DIR (failure), output/data: SM_OUTPUT_DATA_DIR
        checkpoints/  resumed from when the run is restarted
        train.log     stdout and stderr (`fastuner logs adapter.NAME -f`)
        exit_code     written when the program ends
        artifact.json the object-store key of each file of the result (model/, the config, the log)

Unchanged inputs never retrain: the run name is a hash of everything that forces replacement, and a
finished run is adopted. A finished run's files are also put in the content-addressed object store; state
keeps the keys of the last few replaced runs (`provider.local.keep_previous`), so that going back to one
of them restores its run folder from the store (hard links, seconds) instead of training again. A crash, a Ctrl-C or `apply --no-wait` leaves the process running and the
resource pending; the next apply waits for it, or restarts it from its last checkpoint if it died.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from fastuner.config.duration import parse_duration
from fastuner.data.store import LocalObjectStore, ObjectStore
from fastuner.errors import DiagnosticsError
from fastuner.plan.model import Change
from fastuner.plan.observed import Observation, ObservationStatus
from fastuner.providers.base import Context, Outcome, OutcomeStatus, ProviderError, ResourceProvider
from fastuner.providers.local import processes
from fastuner.providers.local.sagemaker_tree import write_input_config
from fastuner.providers.programs import program
from fastuner.providers.training import training_config
from fastuner.providers.trainlog import LogFollower, last_step
from fastuner.state.model import ResourceState

SPLITS = ("train", "validation", "test")
KEPT = ("model", "input/config/hyperparameters.json", "train.log")  # what a restored run needs


class LocalAdapters(ResourceProvider):
    kind = "adapter"

    def __init__(self, work_dir: Path, spec_dir: Path, *, python: str | None = None, device: str = "auto",
                 slots: int = 1, poll: float = 0.25, env: Mapping[str, str] | None = None) -> None:
        self.runs = work_dir / "runs"
        self.env = dict(os.environ if env is None else env)  # what the training program starts with
        self.store: ObjectStore = LocalObjectStore(work_dir / "objects")
        self.spec_dir = spec_dir
        self.python = python or sys.executable
        self.device = device
        self.poll = poll
        self._slots = threading.BoundedSemaphore(max(1, slots))

    # --- reading ---------------------------------------------------------------------------------

    def run_dir(self, physical_name: str) -> Path:
        return self.runs / physical_name

    def read(self, rs: ResourceState) -> Observation:
        stored = self._stored(rs)
        run = self.run_dir(rs.physical_name or "")
        done = self._finished_outputs(run)
        if done is not None:
            return Observation(ObservationStatus.READY, outputs=done, stored=stored)
        code = processes.exit_code(run)
        if code is not None and code != 0:
            return Observation(ObservationStatus.FAILED, detail=self._failure(run, code), stored=stored)
        info = processes.recorded(run)
        if info and processes.alive(int(info["pid"])):
            progress = last_step(run / "train.log")
            return Observation(ObservationStatus.PENDING, detail=f"training (pid {info['pid']}){progress}", stored=stored)
        if rs.status == "pending" or (rs.pending is not None):
            return Observation(ObservationStatus.PENDING, detail="the training process is gone; apply restarts it from its "
                                                 "last checkpoint", stored=stored)
        return Observation(ObservationStatus.MISSING, detail=f"no trained adapter at {run / 'model'}", stored=stored)

    def _stored(self, rs: ResourceState) -> frozenset[str]:
        """Identities whose kept result (earlier runs, and the current one's) is whole in the store."""
        kept = [(t.identity, t.artifact) for t in rs.history]
        if rs.outputs.get("artifact"):
            kept.append((rs.identity, rs.outputs["artifact"]))
        return frozenset(ident for ident, artifact in kept if self._whole(artifact))

    def _whole(self, artifact: dict[str, str]) -> bool:
        try:
            return bool(artifact) and all(self.store.exists(key) for key in artifact.values())
        except ValueError:  # not an object key
            return False

    def _finished_outputs(self, run: Path) -> dict[str, Any] | None:
        model = run / "model"
        if processes.exit_code(run) != 0:
            return None
        if not (model / "adapter_model.safetensors").is_file() or not (model / "fastuner.json").is_file():
            return None
        meta = json.loads((model / "fastuner.json").read_text())
        metrics = meta.get("metrics") or {}
        info = processes.recorded(run) or {}
        finished = (run / "exit_code").stat().st_mtime
        duration = finished - float(info.get("started_at", finished))
        restored = _read_json(run / "restored.json")
        if restored:
            duration = float(restored.get("duration_s") or 0.0)
        config = json.loads((run / "input" / "config" / "hyperparameters.json").read_text())
        extra: dict[str, Any] = {"artifact": _read_json(run / "artifact.json")} if (run / "artifact.json").is_file() else {}
        if restored:
            extra["restored_from"] = restored.get("from")
        return {**extra,
            "run": run.name,
            "artifact_dir": str(model),
            "log": str(run / "train.log"),
            "task": meta.get("task"),
            "base_model": meta.get("base_model"),
            "labels": meta.get("labels"),
            "metrics": metrics,
            "duration_s": duration,
            "config": config,
        }

    @staticmethod
    def _failure(run: Path, code: int) -> str:
        reason = ""
        with contextlib.suppress(FileNotFoundError):
            reason = (run / "output" / "failure").read_text().strip()
        if not reason:
            reason = f"the training program exited with code {code}"
        return f"{reason} (log: {run / 'train.log'})"

    # --- creating ----------------------------------------------------------------------------------

    def create(self, change: Change, ctx: Context) -> Outcome:
        inputs = change.after or {}
        run = self.run_dir(change.physical_name or change.address)
        if self._finished_outputs(run) is not None:  # an identical earlier run (same inputs, same code): adopt it
            return self._kept(run)
        if change.restore and self._restore(change.restore, run, ctx):
            return self._kept(run)
        info = processes.recorded(run)
        if info and processes.alive(int(info["pid"])) and processes.exit_code(run) is None:
            ctx.progress(f"adopting running training (pid {info['pid']})")
            return self._kept(run, self._wait(run, int(info["pid"]), inputs, ctx))
        with self._slots:
            if ctx.cancelled.is_set():
                return Outcome.pending({"run": run.name}, "not started: interrupted")
            launched = self._start(change, run, ctx)
            return self._kept(run, self._wait(run, launched.pid, inputs, ctx))

    def _kept(self, run: Path, outcome: Outcome | None = None) -> Outcome:
        """A finished run, its files put in the object store (once) so that it can be restored later."""
        if outcome is not None and outcome.status is not OutcomeStatus.READY:
            return outcome
        if not (run / "artifact.json").is_file():
            artifact = {}
            for rel in KEPT:
                top = run / rel
                for path in sorted(top.rglob("*") if top.is_dir() else [top]):
                    if path.is_file():
                        artifact[path.relative_to(run).as_posix()] = self.store.put_file(path)
            _write_json(run / "artifact.json", artifact)
        return Outcome.ready(self._finished_outputs(run) or {})

    def _restore(self, restore: dict[str, Any], run: Path, ctx: Context) -> bool:
        """Rebuild the run folder of an earlier identical run from the store: no training. False (then it
        trains) when a kept file is gone."""
        artifact = restore.get("artifact") or {}
        if not self._whole(artifact) or not all(_safe(rel) for rel in artifact):
            ctx.progress(f"the kept files of {restore.get('physical_name')} are incomplete: training instead")
            return False
        ctx.progress(f"restoring {restore.get('physical_name')} from the object store")
        shutil.rmtree(run, ignore_errors=True)
        for rel, key in artifact.items():
            target = run / rel
            self.store.materialize(key, target.parent, target.name)
        _write_json(run / "artifact.json", artifact)
        _write_json(run / "restored.json", {"from": restore.get("physical_name"),
                                            "duration_s": restore.get("duration_s"), "restored_at": time.time()})
        (run / "exit_code").write_text("0\n")  # last: a run folder is finished once this says so
        return True

    def _start(self, change: Change, run: Path, ctx: Context) -> processes.Launched:
        inputs = change.after or {}
        dataset_address = f"dataset.{inputs['dataset']}"
        dataset = ctx.upstream.get(dataset_address)
        if dataset is None or not dataset.outputs.get("splits"):
            raise ProviderError(f"{dataset_address} has no stored splits", "Apply the dataset first.")
        (run / "model").mkdir(parents=True, exist_ok=True)
        (run / "output" / "data").mkdir(parents=True, exist_ok=True)
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        channels = {}
        for split in SPLITS:
            entry = dataset.outputs["splits"].get(split) or {}
            if not entry.get("rows"):
                continue  # the program treats an absent channel as no such split
            folder = run / "input" / "data" / split
            shutil.rmtree(folder, ignore_errors=True)
            try:
                self.store.materialize(entry["key"], folder, f"{split}.jsonl")
            except DiagnosticsError as exc:
                raise ProviderError(exc.diagnostics[0].summary, f"Re-create {dataset_address}: "
                                    f"fastuner apply --replace {dataset_address}") from None
            channels[split] = folder
        if "train" not in channels:
            raise ProviderError(f"{dataset_address} has an empty train split")
        labels = list((dataset.outputs.get("labels") or {}).keys()) or None
        config = training_config(inputs, dataset.inputs, labels, self.spec_dir, run / "checkpoints")
        config_dir = run / "input" / "config"
        config_file = write_input_config(config_dir, config, channels)
        env = dict(self.env)
        env.update({
            "SM_MODEL_DIR": str(run / "model"),
            "SM_OUTPUT_DIR": str(run / "output"),
            "SM_OUTPUT_DATA_DIR": str(run / "output" / "data"),
            "SM_CHANNEL_CONFIG": str(config_dir),
            "PYTHONUNBUFFERED": "1",
            **{f"SM_CHANNEL_{k.upper()}": str(v) for k, v in channels.items()},
        })
        env.pop("SM_HPS", None)
        if self.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        (run / "output" / "failure").unlink(missing_ok=True)
        argv = [self.python, str(program("train")), "--config", str(config_file)]
        resumed = any((run / "checkpoints").iterdir())
        ctx.progress("resuming from the last checkpoint" if resumed else "starting")
        return processes.launch(argv, cwd=run, env=env, log=run / "train.log")

    def _wait(self, run: Path, pid: int, inputs: dict[str, Any], ctx: Context) -> Outcome:
        max_runtime = parse_duration(inputs.get("compute", {}).get("max_runtime", "4h")).total_seconds()
        started = float((processes.recorded(run) or {}).get("started_at", time.time()))
        log = run / "train.log"
        follower = LogFollower(log)
        while True:
            self._report(follower, ctx)
            code = processes.exit_code(run)
            if code is not None:
                processes.reap(pid)
                if code == 0:
                    done = self._finished_outputs(run)
                    if done is None:
                        raise ProviderError(f"training finished but left no adapter in {run / 'model'}",
                                            f"See the log: {log}")
                    return Outcome.ready(done)
                raise ProviderError(self._failure(run, code), f"fastuner logs {ctx.address}")
            if not processes.alive(pid):
                processes.reap(pid)
                if processes.exit_code(run) is None:
                    raise ProviderError(f"the training process (pid {pid}) disappeared without an exit code",
                                        f"See the log: {log}; the next apply resumes from the last checkpoint.")
                continue
            if time.time() - started > max_runtime:
                processes.stop(pid)
                raise ProviderError(f"training exceeded compute.max_runtime "
                                    f"({inputs.get('compute', {}).get('max_runtime')}) and was stopped",
                                    "Raise max_runtime or reduce epochs; the next apply resumes from the "
                                    "last checkpoint.")
            if ctx.cancelled.is_set() or not ctx.wait:
                why = "interrupted" if ctx.cancelled.is_set() else "--no-wait"
                return Outcome.pending({"run": run.name, "pid": pid, "log": str(log)},
                                       f"{why}: training continues in the background (pid {pid}); "
                                       f"follow it with `fastuner logs {ctx.address} -f`")
            time.sleep(self.poll)

    @staticmethod
    def _report(follower: LogFollower, ctx: Context) -> None:
        """What the log says since the last poll: its warnings kept in apply's output, its latest
        phase or step as progress. Only news is reported, so a CI log gets each logged step once."""
        for kind, text in follower.poll():
            (ctx.warning if kind == "warning" else ctx.progress)(text)

    def read_log(self, rs: ResourceState, *, follow: bool) -> Iterator[str]:
        """The run's train.log; followed while the training process lives."""
        run = self.run_dir(rs.physical_name or "")
        return processes.read_log(rs.address, run / "train.log", lambda: self._running(run), follow=follow)

    @staticmethod
    def _running(run: Path) -> bool:
        info = processes.recorded(run)
        return bool(info) and processes.exit_code(run) is None and processes.alive(int(info["pid"]))

    # --- updating and deleting ----------------------------------------------------------------------

    def update(self, change: Change, prior: ResourceState, ctx: Context) -> Outcome:
        # Only tags, compute, checkpoint_every, the dataset's name and depends_on change in place; the
        # trained adapter stays valid.
        return Outcome.ready(prior.outputs)

    def delete(self, rs: ResourceState, ctx: Context) -> None:
        run = self.run_dir(rs.physical_name or "")
        info = processes.recorded(run)
        if info:
            processes.stop(int(info["pid"]))
        if rs.physical_name:
            shutil.rmtree(run, ignore_errors=True)
        keep = ctx.referenced()
        artifacts = [rs.outputs.get("artifact") or {}, *(t.artifact for t in rs.history)]
        for key in {k for artifact in artifacts for k in artifact.values()} - keep:
            with contextlib.suppress(ValueError):
                self.store.delete(key)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_json(path: Path, value: Any) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(temp, path)


def _safe(rel: str) -> bool:
    """A relative path inside a run folder (a plan file is user-editable)."""
    parts = PurePosixPath(rel).parts
    return bool(parts) and not PurePosixPath(rel).is_absolute() and ".." not in parts
