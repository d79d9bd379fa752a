# Copyright 2026 The opd_jax Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Tests of the metric writers and the console progress bar."""

import glob
import io
import json
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from opd_jax.trainer import reporting


def _read_jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _read_events(logdir):
  """Parses every TFRecord event file under `logdir` into Event protos."""
  events = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset : offset + 8])
      offset += 12  # Length and its masked CRC.
      event = event_pb2.Event()
      event.ParseFromString(data[offset : offset + length])
      events.append(event)
      offset += length + 4  # Payload and its masked CRC.
  return events


def _scalars(events):
  return {
      (e.step, v.tag): v.simple_value
      for e in events
      for v in e.summary.value
      if v.HasField("simple_value")
  }


def test_to_float():
  assert reporting.to_float("a", jnp.float32(1.5)) == 1.5
  assert reporting.to_float("a", np.array([2], np.int32)) == 2.0
  assert reporting.to_float("a", True) == 1.0
  with pytest.raises(TypeError, match="'loss/x'.*shape \\(2,\\)"):
    reporting.to_float("loss/x", np.zeros(2))
  with pytest.raises(TypeError, match="'t'"):
    reporting.to_float("t", "text")


def test_jsonl_contents_and_resume(tmp_path):
  path = tmp_path / "run" / "metrics.jsonl"
  with reporting.JsonlWriter(path) as w:
    w.write_hparams({"optim": {"lr": 1e-3}, "name": "x", "shape": (1, 2)})
    for step in range(1, 6):
      w.write_scalars(
          step,
          {"loss/rkl": jnp.asarray(step / 10), "select/frac": np.float32(0.5)},
      )
    w.write_scalars(6, {"loss/rkl": float("nan"), "grad/norm": jnp.inf})
    w.write_texts(6, {"sample/text": "7+5=12. #### 12"})
  lines = _read_jsonl(path)
  assert lines[0]["hparams"] == {
      "optim/lr": 1e-3,
      "name": "x",
      "shape": "(1, 2)",
  }
  assert lines[1]["step"] == 1 and lines[1]["loss/rkl"] == pytest.approx(0.1)
  assert lines[1]["select/frac"] == 0.5 and isinstance(lines[1]["time"], float)
  assert lines[6]["loss/rkl"] is None and lines[6]["grad/norm"] is None
  assert lines[7]["sample/text"] == "7+5=12. #### 12"
  # A torn last line, as a crash mid-write leaves it.
  with open(path, "a", encoding="utf-8") as f:
    f.write('{"step": 7, "loss/r')
  with reporting.JsonlWriter(path, resume_step=3) as w:
    w.write_scalars(4, {"loss/rkl": 0.4})
  lines = _read_jsonl(path)
  assert [line.get("step") for line in lines] == [None, 1, 2, 3, 4]
  with pytest.raises(ValueError, match="'step'"):
    reporting.JsonlWriter(path).write_scalars(1, {"step": 1})


def test_tensorboard_events(tmp_path):
  w = reporting.TensorBoardWriter(tmp_path / "tb")
  w.write_scalars(1, {"loss/rkl": jnp.float32(0.25), "bad": float("nan")})
  w.write_scalars(2, {"loss/rkl": 0.5})
  w.write_texts(2, {"sample/text": "hello"})
  w.write_hparams({"lr": 0.1, "method": "tip"})
  w.close()
  events = _read_events(tmp_path / "tb")
  scalars = _scalars(events)
  assert scalars == {(1, "loss/rkl"): 0.25, (2, "loss/rkl"): 0.5}
  tags = {v.tag for e in events for v in e.summary.value}
  assert {"sample/text/text_summary", "_hparams_/experiment"} <= tags
  # A resumed writer asks TensorBoard to hide older events after step 1.
  reporting.TensorBoardWriter(tmp_path / "tb", resume_step=1).close()
  starts = [
      e.step for e in _read_events(tmp_path / "tb") if e.HasField("session_log")
  ]
  assert starts == [2]


def test_create_writer_main_and_other(tmp_path):
  with reporting.create_writer(tmp_path / "a", is_main_process=True) as w:
    w.write_scalars(1, {"loss/rkl": 1.0})
  assert (
      _read_jsonl(tmp_path / "a" / reporting.JSONL_NAME)[0]["loss/rkl"] == 1.0
  )
  assert _scalars(_read_events(tmp_path / "a" / reporting.TENSORBOARD_DIR))
  w = reporting.create_writer(tmp_path / "b", is_main_process=False)
  assert isinstance(w, reporting.NoOpWriter)
  w.write_scalars(1, {"loss/rkl": 1.0})
  w.write_texts(1, {"t": "x"})
  w.write_hparams({"lr": 1})
  w.close()
  assert not os.path.exists(tmp_path / "b")


def test_progress_bar_plain_lines():
  out = io.StringIO()  # Not a TTY: plain lines.
  with reporting.ProgressBar(10, initial_step=2, log_every=4, file=out) as bar:
    for step in range(3, 11):
      bar.update(step, {"loss/rkl": jnp.float32(0.125)}, tokens=100)
  lines = out.getvalue().splitlines()
  assert [line.split(" |")[0] for line in lines] == [
      "step 4/10 (40%)",
      "step 8/10 (80%)",
      "step 10/10 (100%)",
  ]
  assert all(
      "steps/s" in l and "tok/s" in l and "loss/rkl=0.125" in l for l in lines
  )
  assert "eta" in lines[0]
  # A long run logged every step prints at most PLAIN_LINES lines (+ last).
  out = io.StringIO()
  with reporting.ProgressBar(300, log_every=1, file=out) as bar:
    for step in range(1, 301):
      bar.update(step, {"loss/rkl": 0.5}, tokens=10)
  lines = out.getvalue().splitlines()
  assert len(lines) == reporting.ProgressBar.PLAIN_LINES, len(lines)
  assert lines[0].startswith("step 12/300") and "step 300/300" in lines[-1]
  quiet = io.StringIO()
  bar = reporting.ProgressBar(
      10, is_main_process=False, log_every=1, file=quiet
  )
  bar.update(1, {"loss/rkl": 1.0})
  assert not quiet.getvalue()


def test_progress_bar_tty():
  class Tty(io.StringIO):

    def isatty(self):
      return True

  out = Tty()
  with reporting.ProgressBar(5, file=out) as bar:
    for step in range(1, 6):
      bar.update(step, {"loss/rkl": 0.5}, tokens=10)
  text = out.getvalue()
  assert "5/5" in text and "loss/rkl=0.5" in text and "tok/s" in text


def test_jsonl_lines_reach_the_file_before_close(tmp_path):
  # A SIGKILLed run never closes its writer: each line must be on disk as
  # soon as it is written.
  path = tmp_path / "metrics.jsonl"
  w = reporting.JsonlWriter(path)
  w.write_scalars(1, {"loss/total": 0.5})
  w.write_scalars(2, {"loss/total": 0.25})
  assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [
      1,
      2,
  ]
  w.close()
