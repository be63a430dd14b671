"""Reading the training program's log: what apply shows (phases, every logged step with the program's
own ETA, this program's warnings) and what stays in the log file (library noise)."""

from __future__ import annotations

from pathlib import Path

from fastuner.providers.trainlog import LogFollower, last_step, read_line


def test_lines_a_user_reads_and_lines_left_in_the_log() -> None:
    assert read_line("[fastuner] INFO: loading the base model m") == ("progress", "loading the base model m")
    assert read_line("[fastuner] WARNING: 3 of 9 examples are longer than max_seq_len (8 tokens) and were "
                     "truncated")[0] == "warning"
    assert read_line("[fastuner] rank1 ERROR: boom") == ("warning", "boom")
    step = "[fastuner] step=3 total_steps=12 epoch=0.25 train_loss=1.3800 lr=1.5e-04 tokens_per_s=9.0 eta_s=167.4"
    assert read_line(step) == ("progress", "step 3/12 · loss 1.3800 · ETA 2m47s")
    assert read_line("[fastuner] step=12 total_steps=12 epoch=1.00 train_loss=1.2 eta_s=0.0") == (
        "progress", "step 12/12 · loss 1.2")  # no "ETA 0s" on the last step
    assert read_line("[fastuner] step=3 total_steps=12 epoch=0.25 train_loss=1.38") == ("progress",
                                                                                      "step 3/12 · loss 1.38")
    for noise in ("[fastuner] step=0 total_steps=12 epoch=0.00 base_test_loss=1.3864",
                  "[fastuner] step=12 total_steps=12 epoch=1.00 eval_loss=1.3865",
                  "[transformers] WARNING: BertForSequenceClassification LOAD REPORT from: m",
                  "[warnings] WARNING: FutureWarning: deprecated (transformers/modeling_utils.py:3314)",
                  "Traceback (most recent call last):"):
        assert read_line(noise) is None


def test_every_logged_step_in_order_and_a_partial_line_waits(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    follower = LogFollower(log)
    assert follower.poll() == []  # not written yet
    log.write_text("[fastuner] INFO: tokenizing\n"
                   + "".join(f"[fastuner] step={i} total_steps=3 epoch=0.0 train_loss=1.{i} eta_s={3 - i}\n"
                             for i in (1, 2))
                   + "[fastuner] WARNING: truncated\n[fastuner] step=3 total")
    assert follower.poll() == [("progress", "tokenizing"), ("progress", "step 1/3 · loss 1.1 · ETA 2s"),
                               ("progress", "step 2/3 · loss 1.2 · ETA 1s"), ("warning", "truncated")]
    assert follower.poll() == []
    with open(log, "a") as f:
        f.write("_steps=3 epoch=1.0 train_loss=1.3\n")
    assert follower.poll() == [("progress", "step 3/3 · loss 1.3")]
    assert last_step(log) == ", step 3/3"
