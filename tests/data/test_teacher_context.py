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
"""The teacher's own prompt: templates, budgets, bad input, HF parity."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import data as data_lib
from opd_jax import sharding
from opd_jax.data import arithmetic
from opd_jax.data import context as contexts
from opd_jax.data import tokenizer as task_tokenizer
from opd_jax.evaluation.evaluate import context_accuracy
from opd_jax.models import load_hf, response_hidden
from opd_jax.trainer import self_teacher

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
import hf_helpers  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  path = task_tokenizer.build_task_tokenizer(tmp_path_factory.mktemp("tok"))
  return task_tokenizer.load_task_tokenizer(path)


def _source(n=6):
  return data_lib.TaskSource("train", n, difficulty="easy")


def _dataset(tok, template, budget, source=None, **kw):
  return data_lib.PromptDataset(
      source or _source(),
      tok,
      max_prompt_len=40,
      max_new_tokens=8,
      teacher_context=contexts.TeacherContext(template, budget),
      **kw,
  )


def test_arithmetic_provides_context_fields():
  ex = arithmetic.make_example("train", 3)
  fields = _source()[0].context
  assert set(fields) == set(data_lib.TaskSource.CONTEXT_FIELDS)
  wrong = arithmetic.context_fields(ex)["wrong"]
  assert wrong != ex.rationale
  assert arithmetic.extract_answer(wrong) != ex.answer
  assert not arithmetic.verify_rationale(
      arithmetic.Example(ex.question, wrong, arithmetic.extract_answer(wrong))
  )


def test_empty_template_is_the_student_prompt(tok):
  ds = _dataset(tok, "empty", 40)
  batch = ds.batch(np.arange(len(ds)))
  np.testing.assert_array_equal(batch["teacher_prompt"], batch["prompt"])
  np.testing.assert_array_equal(
      batch["teacher_prompt_mask"], batch["prompt_mask"]
  )


@pytest.mark.parametrize("name", ["solution", "summary", "correct_wrong"])
def test_presets_hold_the_context_then_the_question(tok, name):
  ds = _dataset(tok, name, 96)
  rec = ds.source[0]
  text = tok.decode(ds.teacher_prompts.ids[0])
  field = {"solution": "solution", "summary": "summary"}.get(name, "wrong")
  assert rec.context[field] in text
  # The question ends the teacher prompt exactly as the student's.
  student = list(ds.prompts[0])
  teacher = list(ds.teacher_prompts.ids[0])
  assert len(teacher) > len(student)
  tail = len(student) - 2  # <bos><user> differ in position only
  assert teacher[-tail:] == student[-tail:]
  assert ds.teacher_prompts.truncated == 0


def test_overlong_teacher_prompt_is_cut_from_the_left_once(tok, caplog):
  with caplog.at_level("WARNING"):
    ds = _dataset(tok, "correct_wrong", 34)
  warned = [r for r in caplog.records if "cut from the left" in r.message]
  assert len(warned) == 1 and ds.teacher_prompts.truncated > 0
  for student, teacher in zip(ds.prompts, ds.teacher_prompts.ids):
    assert len(teacher) <= 34
    # BOS and the user-turn opening stay first, the question stays last.
    assert list(teacher[:2]) == list(student[:2])
    n = len(student) - 2
    assert list(teacher[-n:]) == list(student[-n:])


def test_bad_budget_and_fields_name_the_example(tok, tmp_path):
  with pytest.raises(contexts.ContextError, match="row 0: .*no room for the"):
    _dataset(tok, "solution", 10)
  path = tmp_path / "q.jsonl"
  rows = [
      {"question": "Tom has 5 pens.", "sol": "5+0=5. #### 5"},
      {"question": "Ann has 2 pens.", "sol": " "},
  ]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  source = data_lib.FileSource(path, context_fields={"solution": "sol"})
  with pytest.raises(
      contexts.ContextError, match=r"line 2: context field 'solution' is empty"
  ):
    _dataset(tok, "solution", 64, source=source)
  with pytest.raises(ValueError, match="solution_field='nope' is not a field"):
    data_lib.FileSource(path, context_fields={"solution": "nope"})
  with pytest.raises(contexts.ContextError, match=r"naming \{question\}"):
    contexts.TeacherContext("{solution}", 64)


def test_a_different_assistant_opening_is_refused(tok):
  class Shifted:
    """The task tokenizer whose template opens the turn after a context
    with an extra token (as some reasoning templates do)."""

    def __init__(self, inner):
      self._inner = inner

    def __getattr__(self, name):
      return getattr(self._inner, name)

    def __call__(self, texts, **kw):
      if isinstance(texts, str):
        return self._inner(texts, **kw)
      texts = [
          t.replace("<assistant>", "<assistant>:") if "#" in t else t
          for t in texts
      ]
      return self._inner(texts, **kw)

  with pytest.raises(contexts.ContextError, match="opens the assistant turn"):
    _dataset(Shifted(tok), "solution", 96)


def test_teacher_logprobs_under_context_match_transformers(tok, tmp_path):
  pytest.importorskip("torch")
  from opd_jax.testing import tiny_config  # pylint: disable=g-import-not-at-top

  config = tiny_config("qwen3", vocab_size=80).replace(
      bos_token_id=1, eos_token_ids=(2,), pad_token_id=0
  )
  hf = hf_helpers.hf_model(config, seed=3)
  model = load_hf(hf_helpers.save_hf_model(hf, str(tmp_path / "hf")))
  ds = _dataset(tok, "solution", 64)
  host = ds.batch(np.arange(4))
  b, t = 4, 8
  rng = np.random.default_rng(0)
  response = rng.integers(4, len(tok), (b, t)).astype(np.int32)
  lengths = np.array([8, 5, 3, 7])
  response_mask = np.arange(t)[None] < lengths[:, None]
  mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"))
  batch = {
      "tokens": jnp.concatenate([host["prompt"], response], 1),
      "mask": jnp.concatenate([host["prompt_mask"], response_mask], 1),
      "response_mask": jnp.asarray(response_mask),
  }
  seq = self_teacher.teacher_sequences(host, batch, mesh)
  # Off the mesh: the parity needs only the values.
  tokens, mask = (
      np.asarray(seq[k]) for k in ("teacher/tokens", "teacher/mask")
  )
  # Student and teacher prompts differ in length, row by row.
  assert (host["teacher_prompt_mask"].sum(1) > host["prompt_mask"].sum(1)).all()
  assert len(set(host["teacher_prompt_mask"].sum(1))) > 1
  self_teacher.check_response_ids(batch["tokens"], tokens, response_mask)
  hidden = response_hidden(model, tokens, mask, t)
  logits = hidden @ model.head_matrix()
  got = jnp.take_along_axis(
      jax.nn.log_softmax(logits), jnp.asarray(response)[..., None], -1
  )[..., 0]
  for row in range(b):
    ids = np.concatenate(
        [ds.teacher_prompts.ids[row], response[row, : lengths[row]]]
    )
    ref = hf_helpers.hf_logits(hf, ids[None])[0]
    ref = (
        ref
        - np.log(np.exp(ref - ref.max(-1, keepdims=True)).sum(-1))[:, None]
        - ref.max(-1, keepdims=True)
    )
    p = len(ds.teacher_prompts.ids[row])
    want = ref[np.arange(p - 1, len(ids) - 1), ids[p:]]
    np.testing.assert_allclose(
        np.asarray(got[row, : lengths[row]]), want, atol=1e-4
    )


def test_check_response_ids_refuses_a_mismatch():
  tokens = np.array([[5, 6, 7, 8]])
  teacher = np.array([[9, 9, 5, 6, 7, 9]])
  with pytest.raises(self_teacher.SelfTeacherError, match="token 2 of row 0"):
    self_teacher.check_response_ids(tokens, teacher, np.ones((1, 3), bool))
  # Masked positions (after EOS) may differ.
  self_teacher.check_response_ids(
      tokens, teacher, np.array([[True, True, False]])
  )


def test_context_source_puts_the_context_in_a_fraction_of_prompts():
  base = _source(8)
  ctx = contexts.TeacherContext("solution", 96)
  mixed = contexts.ContextSource(base, ctx, 0.5)
  with_context = [
      mixed[i].question != base[i].question for i in range(len(base))
  ]
  assert sum(with_context) == 4 and with_context[1] and not with_context[0]
  full = contexts.ContextSource(base, ctx)
  assert full[0].question == ctx.text(base[0].question, base[0].context, "")
  assert full[0].answer == base[0].answer


def test_the_shipped_student_uses_an_in_context_solution():
  # The built-in pair shows what self-distillation can transfer: the
  # shipped SFT student, shown the reference solution, answers far more
  # test questions than bare (0.309 against 0.066 on 256, greedy, the same
  # on an Intel Xeon and an AMD EPYC: `scripts/context_accuracy.py`).
  path = os.path.join(
      os.path.dirname(__file__), "..", "..", "assets", "demo", "student_init"
  )
  base = data_lib.TaskSource(
      "test",
      128,
      difficulty="easy",
  )
  accuracy = context_accuracy(
      load_hf(path),
      task_tokenizer.load_tokenizer(path),
      base,
      ("empty", "solution"),
      max_prompt_len=128,
      max_new_tokens=24,
  )
  assert accuracy["solution"] >= accuracy["empty"] + 0.1, accuracy
