"""SIGTERM: SageMaker (spot interruption, StopTrainingJob) and torchrun send it before killing."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopFlag:
    """Set by SIGTERM; the loop finishes the current step, saves a checkpoint and exits."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.previous: Any = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, lambda *_: self.event.set())

    def restore(self) -> None:
        if self.previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None

    @property
    def set(self) -> bool:
        return self.event.is_set()
