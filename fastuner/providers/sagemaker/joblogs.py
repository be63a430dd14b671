"""A training job's log in CloudWatch Logs: SageMaker writes each instance's output (the toolkit's, then
the program's stdout and stderr) to the stream `<job name>/algo-<N>-<epoch>` of the group
`/aws/sagemaker/TrainingJobs`. The streams appear once the instances start.

`StreamReader` reads one stream forward with GetLogEvents' token (AWS answers the same token when there
is nothing new); `JobStreams` finds a job's streams (one per instance and start, sorted by host, then
by start); `LiveProgress` turns the first host's new lines into what apply shows (rank 0, which logs the
steps, runs there), with the same reading of lines as the local provider (fastuner/providers/trainlog.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastuner.aws.errors import error_code
from fastuner.providers.sagemaker.errors import provider_errors
from fastuner.providers.sagemaker.jobs import LOG_GROUP
from fastuner.providers.trainlog import read_line

_HOST = re.compile(r"/algo-(\d+)")
MAX_PAGES = 50  # GetLogEvents pages read in one go (10,000 events each at most)


def host_of(stream: str) -> str:
    """"algo-2" of "job/algo-2-1712345678"."""
    m = _HOST.search(stream)
    return f"algo-{m.group(1)}" if m else stream.rsplit("/", 1)[-1]


def _host_number(stream: str) -> tuple[int, str]:
    m = _HOST.search(stream)
    return (int(m.group(1)) if m else 1 << 30, stream)


class StreamReader:
    """One log stream, read forward from its start."""

    def __init__(self, client: Callable[[], Any], job: str, stream: str) -> None:
        self.client = client
        self.job = job
        self.stream = stream
        self.token: str | None = None

    def read(self) -> list[str]:
        """The messages written since the last read."""
        out: list[str] = []
        with provider_errors(f"reading the log of training job {self.job}", "logs"):
            for _page in range(MAX_PAGES):
                kw: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": self.stream, "startFromHead": True}
                if self.token:
                    kw["nextToken"] = self.token
                answer = self.client().get_log_events(**kw)
                events = answer.get("events") or []
                out.extend(str(e.get("message", "")).rstrip("\n") for e in events)
                token = answer.get("nextForwardToken")
                if token is None or token == self.token:
                    break
                self.token = token
                if not events:
                    break
        return out


class JobStreams:
    """The log streams of one job, found as they appear."""

    def __init__(self, client: Callable[[], Any], job: str) -> None:
        self.client = client
        self.job = job
        self.readers: dict[str, StreamReader] = {}

    def discover(self) -> list[StreamReader]:
        """Readers for every stream the job has so far, the first host first."""
        names: list[str] = []
        with provider_errors(f"listing the log streams of training job {self.job}", "logs"):
            try:
                kw: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{self.job}/"}
                while True:
                    answer = self.client().describe_log_streams(**kw)
                    names.extend(s["logStreamName"] for s in answer.get("logStreams") or [])
                    token = answer.get("nextToken")
                    if not token or token == kw.get("nextToken"):
                        break
                    kw["nextToken"] = token
            except Exception as exc:
                if error_code(exc) != "ResourceNotFoundException":  # no group yet: no job has logged
                    raise
        for name in sorted(names, key=_host_number):
            self.readers.setdefault(name, StreamReader(self.client, self.job, name))
        return [self.readers[n] for n in sorted(self.readers, key=_host_number)]


class LiveProgress:
    """What the first host's log says since the last poll, as ("progress" | "warning", text) — every
    logged step and warning once, in order. A spot interruption restarts the host under a new stream,
    so the streams are looked for again at every poll."""

    def __init__(self, client: Callable[[], Any], job: str) -> None:
        self.streams = JobStreams(client, job)

    def poll(self) -> list[tuple[str, str]]:
        readers = self.streams.discover()
        first = host_of(readers[0].stream) if readers else ""
        lines = [line for r in readers if host_of(r.stream) == first for line in r.read()]
        events = (read_line(line) for line in lines)
        return [e for e in events if e is not None]
