"""Classification metrics from a confusion matrix (rows: truth, columns: prediction)."""

from __future__ import annotations

import pytest
import torch
from fastuner_train.evaluation import confusion_metrics


def test_accuracy_and_macro_f1() -> None:
    confusion = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    got = confusion_metrics(confusion)
    assert got["accuracy"] == pytest.approx(5 / 8)
    # class 0: p=3/3 r=3/4 f1=6/7; class 1: p=2/3 r=2/4 f1=4/7; class 2: never true, predicted twice: f1=0
    assert got["macro_f1"] == pytest.approx((6 / 7 + 4 / 7 + 0) / 3)


def test_classes_absent_from_truth_and_predictions_do_not_count() -> None:
    confusion = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    assert confusion_metrics(confusion) == {"accuracy": 1.0, "macro_f1": 1.0}


def test_a_classification_run_reports_the_metrics_its_task_declares() -> None:
    """fastuner reads `test_<metric>` for each metric of the task's table (pinned to fastuner's by
    tests/core/test_tasks.py), so the names computed here must be those."""
    from fastuner_train.tasks import TASKS

    assert tuple(confusion_metrics(torch.eye(2))) == TASKS["classification"].metrics
