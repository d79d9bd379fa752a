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
"""A student cut from its teacher loads in transformers and in opd_jax."""

import copy
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import hf_helpers
from opd_jax import testing
from opd_jax.data import tokenizer as task_tokenizer
from opd_jax.models import cut, load_hf

pytest.importorskip("torch")

ATOL = 1e-4  # float32 parity, never relaxed
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
_SCRIPT = os.path.join(_ROOT, "scripts", "make_student.py")
_FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  """A 6-layer random Llama saved by transformers, with a tokenizer."""
  config = testing.tiny_config("llama", num_layers=6, llama3_rope=True)
  hf = hf_helpers.hf_model(config, seed=21)
  path = str(tmp_path_factory.mktemp("teacher") / "hf")
  hf_helpers.save_hf_model(hf, path)
  task_tokenizer.build_task_tokenizer(path)
  return path, hf


def _tokens(vocab):
  return np.random.default_rng(0).integers(0, vocab, (2, 20))


def _dropped_layers_reference(hf, keep, tokens):
  """The teacher's torch model with the other layers removed."""
  import torch  # pylint: disable=g-import-not-at-top

  ref = copy.deepcopy(hf)
  ref.model.layers = torch.nn.ModuleList(ref.model.layers[i] for i in keep)
  ref.config.num_hidden_layers = len(keep)
  with torch.no_grad():
    return ref(torch.as_tensor(tokens), use_cache=False).logits.numpy()


@pytest.mark.parametrize(
    "num_layers,keep,want",
    [
        (30, 4, (0, 10, 19, 29)),
        (6, 3, (0, 3, 5)),
        (6, 2, (0, 5)),
        (6, 6, (0, 1, 2, 3, 4, 5)),
        (6, 1, (0,)),
        (28, 14, None),
    ],
)
def test_evenly_spaced_layers(num_layers, keep, want):
  got = cut.evenly_spaced_layers(num_layers, keep)
  if want is not None:
    assert got == want
  assert len(set(got)) == keep and got[0] == 0
  assert keep == 1 or got[-1] == num_layers - 1
  assert cut.check_layers(got, num_layers) == got


def test_student_loads_in_transformers_and_opd_jax(teacher, tmp_path):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  path, hf = teacher
  keep = (0, 2, 5)
  out = str(tmp_path / "student")
  written = cut.cut_layers(path, out, keep)
  assert written["num_hidden_layers"] == 3
  # Tensors are the teacher's, renumbered.
  t = load_file(os.path.join(path, "model.safetensors"))
  s = load_file(os.path.join(out, "model.safetensors"))
  for new, old in enumerate(keep):
    name = "model.layers.{}.mlp.down_proj.weight"
    np.testing.assert_array_equal(s[name.format(new)], t[name.format(old)])
  np.testing.assert_array_equal(s["lm_head.weight"], t["lm_head.weight"])
  assert not any(k.startswith("model.layers.3.") for k in s)
  with open(os.path.join(out, cut.PROVENANCE_FILE)) as f:
    assert json.load(f)["kept_layers"] == list(keep)
  # transformers loads it (weights and tokenizer) ...
  student_hf = transformers.AutoModelForCausalLM.from_pretrained(
      out, dtype=torch.float32
  ).eval()
  tok = transformers.AutoTokenizer.from_pretrained(out)
  assert len(tok) == len(transformers.AutoTokenizer.from_pretrained(path))
  # ... opd_jax too, and the three agree on the logits.
  student = load_hf(out)
  assert student.config.num_layers == 3
  tokens = _tokens(student.config.vocab_size)
  ours = np.asarray(student(jnp.asarray(tokens)).logits)
  theirs = hf_helpers.hf_logits(student_hf, tokens)
  reference = _dropped_layers_reference(hf, keep, tokens)
  assert np.abs(ours - theirs).max() <= ATOL
  assert np.abs(theirs - reference).max() <= ATOL
  full = hf_helpers.hf_logits(hf, tokens)  # the cut really changed the model
  assert np.abs(full - reference).max() > 1e-2


def test_sharded_student(teacher, tmp_path):
  path, _ = teacher
  out = str(tmp_path / "student")
  cut.cut_layers(path, out, (1, 4), max_shard_bytes=30_000)
  files = sorted(os.listdir(out))
  assert "model.safetensors.index.json" in files
  assert sum(f.endswith(".safetensors") for f in files) > 1
  two = load_hf(out)
  tokens = jnp.asarray(_tokens(two.config.vocab_size))
  assert np.isfinite(np.asarray(two(tokens).logits)).all()


def test_per_layer_config_lists_are_cut():
  with open(os.path.join(_FIXTURES, "qwen2p5_1p5b_instruct.json")) as f:
    raw = json.load(f)
  raw["layer_types"] = ["full_attention"] * 21 + ["sliding_attention"] * 7
  # pylint: disable-next=protected-access
  out = cut._student_config(raw, (0, 20, 21, 27))
  assert out["num_hidden_layers"] == 4
  assert out["max_window_layers"] == 2  # layers 0 and 20 are below 21
  assert (
      out["layer_types"] == ["full_attention"] * 2 + ["sliding_attention"] * 2
  )
  assert raw["num_hidden_layers"] == 28  # the teacher's dict is untouched


def _cli(*args):
  return subprocess.run(
      [sys.executable, _SCRIPT, *args],
      capture_output=True,
      text=True,
      timeout=300,
  )


def test_cli_num_layers(teacher, tmp_path):
  path, _ = teacher
  out = str(tmp_path / "s")
  proc = _cli(f"--teacher={path}", "--num_layers=3", f"--out={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().endswith("3 of the teacher's 6 layers (0, 3, 5)")
  with open(os.path.join(out, cut.PROVENANCE_FILE)) as f:
    assert json.load(f)["kept_layers"] == [0, 3, 5]


def _no_tokenizer(tmp_path, teacher_path):
  bare = tmp_path / "bare"
  bare.mkdir()
  for name in ("config.json", "model.safetensors"):
    (bare / name).write_bytes(
        open(os.path.join(teacher_path, name), "rb").read()
    )
  return str(bare)


# (flags, with {teacher}, {tmp} and {bare} filled in; message fragment).
CLI_ERRORS = [
    (
        ["--keep_layers=0,9"],
        "keep_layers: layer 9 is out of range; the teacher has 6 layers (0..5)",
    ),
    (["--keep_layers=3,1"], "expected strictly increasing indices"),
    (
        ["--keep_layers=0,a"],
        "--keep_layers: expected comma-separated integers, got '0,a'",
    ),
    (["--num_layers=7"], "num_layers: expected 1 <= N <= 6"),
    (["--num_layers=2", "--keep_layers=0,1"], "give exactly one of"),
    ([], "give exactly one of"),
    (
        ["--num_layers=2", "--teacher={tmp}/nope"],
        "--teacher: {tmp}/nope is not a directory",
    ),
    (
        ["--num_layers=2", "--out={teacher}"],
        "--out: {teacher} already exists and is not empty",
    ),
    (["--num_layers=2", "--teacher={bare}"], "has no tokenizer files"),
]


@pytest.mark.parametrize("flags,match", CLI_ERRORS)
def test_cli_errors_are_one_line(teacher, tmp_path, flags, match):
  path, _ = teacher
  names = dict(
      teacher=path, tmp=str(tmp_path), bare=_no_tokenizer(tmp_path, path)
  )
  args = {"teacher": f"--teacher={path}", "out": f"--out={tmp_path}/out"}
  for f in flags:
    for key in args:
      if f.startswith(f"--{key}="):
        args[key] = f
  other = [f for f in flags if not f.startswith(("--teacher=", "--out="))]
  proc = _cli(*[a.format(**names) for a in (*args.values(), *other)])
  assert proc.returncode == 2, (proc.stdout, proc.stderr[-2000:])
  # One error line, last, no traceback (the config guard's warning about
  # ignored fields may precede it).
  lines = proc.stderr.strip().splitlines()
  assert [l for l in lines if l.startswith("error: ")] == lines[-1:], lines
  assert "Traceback" not in proc.stderr
  assert match.format(**names) in lines[-1]
  assert not os.path.exists(f"{tmp_path}/out")
