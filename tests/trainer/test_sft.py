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
"""Tests of the SFT step: reference loss, masking, and that it learns."""

import dataclasses
import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from opd_jax import testing
from opd_jax.data import context as contexts
from opd_jax.data.dataset import PromptDataset
from opd_jax.data.sources import TaskSource
from opd_jax.data import tokenizer as task_tokenizer
from opd_jax.models import Transformer
from opd_jax.trainer import sft
from opd_jax.trainer.state import init_state, make_optimizer


def _model(vocab_size=80, seed=0):
  config = testing.tiny_config("qwen3", vocab_size=vocab_size)
  return Transformer(config, rngs=nnx.Rngs(seed))


def _batch(seed=0, b=3, p=5, t=4, vocab=80):
  rng = np.random.default_rng(seed)
  prompt = rng.integers(4, vocab, (b, p)).astype(np.int32)
  response = rng.integers(4, vocab, (b, t)).astype(np.int32)
  prompt_mask = np.ones((b, p), bool)
  prompt_mask[0, :2] = False  # left padding
  prompt[0, :2] = 0
  response_mask = np.ones((b, t), bool)
  response_mask[1, 2:] = False  # right padding
  response[1, 2:] = 0
  return sft.sft_batch({
      "prompt": prompt,
      "prompt_mask": prompt_mask,
      "response": response,
      "response_mask": response_mask,
  })


def _reference_loss(model, batch):
  """numpy cross-entropy of each response token, from full-sequence logits."""
  tokens, mask = batch["tokens"], batch["mask"]
  rmask = batch["response_mask"]
  t = rmask.shape[1]
  logits = np.asarray(
      model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask)).logits,
      np.float64,
  )
  # The logits at position i predict token i + 1.
  logits = logits[:, -t - 1 : -1]
  labels = tokens[:, -t:]
  logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + (
      logits.max(-1)
  )
  picked = np.take_along_axis(logits, labels[..., None], -1)[..., 0]
  nll = logz - picked
  return (nll * rmask).sum() / rmask.sum()


def test_loss_matches_numpy_cross_entropy():
  model = _model()
  batch = _batch()
  graphdef, state = nnx.split(model)
  loss, metrics = sft.sft_loss(
      state.to_pure_dict(), jax.tree.map(jnp.asarray, batch), graphdef=graphdef
  )
  np.testing.assert_allclose(
      float(loss), _reference_loss(model, batch), rtol=1e-5
  )
  assert 0.0 <= float(metrics["train/token_acc"]) <= 1.0


def test_loss_matches_optax_on_a_hand_case():
  """A one-token response: the loss is optax's CE of the last prompt logit."""
  model = _model()
  tokens = np.array([[0, 1, 7, 9, 11]], np.int32)
  batch = {
      "tokens": tokens,
      "mask": tokens != 0,
      "response_mask": np.array([[True]]),
  }
  graphdef, state = nnx.split(model)
  loss, _ = sft.sft_loss(
      state.to_pure_dict(), jax.tree.map(jnp.asarray, batch), graphdef=graphdef
  )
  logits = model(jnp.asarray(tokens), attention_mask=tokens != 0).logits
  want = optax.softmax_cross_entropy_with_integer_labels(
      logits[0, -2], jnp.asarray(11)
  )
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)


def test_prompt_and_padding_do_not_enter_the_loss():
  model = _model()
  graphdef, state = nnx.split(model)
  params = state.to_pure_dict()
  loss_fn = functools.partial(sft.sft_loss, graphdef=graphdef)
  batch = _batch()
  base, _ = loss_fn(params, jax.tree.map(jnp.asarray, batch))
  # Changing a padded response token changes nothing.
  changed = {k: v.copy() for k, v in batch.items()}
  changed["tokens"][1, -1] = 42
  other, _ = loss_fn(params, jax.tree.map(jnp.asarray, changed))
  np.testing.assert_allclose(float(other), float(base), rtol=1e-6)
  # Only response tokens are scored: with an all-False response mask the
  # loss is exactly zero and so is every gradient (the prompt alone
  # contributes nothing).
  empty = dict(batch, response_mask=np.zeros_like(batch["response_mask"]))
  (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, jax.tree.map(jnp.asarray, empty)
  )
  assert float(loss) == 0.0
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_missing_responses_are_reported():
  with pytest.raises(ValueError, match="no 'response'"):
    sft.sft_batch({"prompt": np.zeros((1, 2)), "prompt_mask": np.ones((1, 2))})


def test_step_decreases_the_loss_and_skips_nan():
  model = _model()
  graphdef, state = nnx.split(model)
  optimizer = make_optimizer(learning_rate=3e-3, total_steps=20)
  st = init_state(state.to_pure_dict(), optimizer, jax.random.PRNGKey(0))
  step = jax.jit(
      functools.partial(sft.sft_step, graphdef=graphdef, optimizer=optimizer)
  )
  batch = jax.tree.map(jnp.asarray, _batch())
  losses = []
  for _ in range(20):
    st, m = step(st, batch)
    losses.append(float(m["loss/ce"]))
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(st.total_skips) == 0
  # A non-finite loss leaves the parameters alone and counts a skip.
  bad = st.replace(params=jax.tree.map(lambda x: x * jnp.nan, st.params))
  before = jax.tree.map(jnp.copy, bad.params)
  after, m = step(bad, batch)
  assert float(m["train/skipped"]) == 1.0
  assert int(after.total_skips) == 1 and int(after.consecutive_skips) == 1
  jax.tree.map(np.testing.assert_array_equal, after.params, before)


def test_sft_train_learns_the_task(tmp_path):
  tok_dir = task_tokenizer.build_task_tokenizer(tmp_path / "tok")
  tok = task_tokenizer.load_task_tokenizer(tok_dir)
  data = PromptDataset(
      TaskSource("train", 64, difficulty="easy"),
      tok,
      max_prompt_len=32,
      max_new_tokens=24,
  )
  model = _model(vocab_size=len(tok))
  logged = []
  trained, history = sft.sft_train(
      model,
      data,
      sft.SftSettings(
          num_steps=30, batch_size=8, learning_rate=3e-3, log_every=10
      ),
      callback=lambda s, m: logged.append((s, m)),
  )
  assert [s for s, _ in history] == [10, 20, 30]
  assert logged == history
  first, last = history[0][1]["loss/ce"], history[-1][1]["loss/ce"]
  assert last < first
  # The input model is left untouched (its parameters were copied).
  a = nnx.state(model, nnx.Param)
  b = nnx.state(trained, nnx.Param)
  diffs = jax.tree.map(lambda x, y: float(jnp.abs(x - y).max()), a, b)
  assert max(jax.tree.leaves(diffs)) > 0


@pytest.mark.parametrize("context_fraction", [0.0, 0.5])
def test_length_grouped_batches_drop_only_padding(tmp_path, context_fraction):
  """Regrouped rows are the original rows less trailing / leading padding.

  With a worked demonstration before half of the questions the prompts are
  padded to ~560 tokens: those rows group together and the others lose the
  prompt padding they do not need.
  """
  tok = task_tokenizer.load_task_tokenizer(
      task_tokenizer.build_task_tokenizer(tmp_path / "tok", "countdown")
  )
  source = TaskSource("train", 48, task="countdown")
  p = 32
  if context_fraction:
    ctx = contexts.TeacherContext("solution", p + 528)
    source = contexts.ContextSource(source, ctx, context_fraction)
    p = ctx.max_prompt_len
  data = PromptDataset(source, tok, max_prompt_len=p, max_new_tokens=512)
  full = [data.batch(np.arange(i, i + 8)) for i in range(0, 48, 8)]
  grouped = sft.length_grouped(iter(map(sft.sft_batch, full)), 6, seed=0)
  out = [next(grouped) for _ in range(6)]
  # Each original row by its tokens: how many response tokens it has.
  lengths = {}
  for b in map(sft.sft_batch, full):
    for i in range(8):
      lengths[b["tokens"][i].tobytes()] = b["response_mask"][i].sum()
  widths, prompt_widths, seen = [], [], set()
  for b in out:
    width = b["response_mask"].shape[1]
    prompt_width = b["tokens"].shape[1] - width
    widths.append(width)
    prompt_widths.append(prompt_width)
    assert width % sft.TRIM_MULTIPLE == 0 or width == 512
    assert prompt_width % sft.TRIM_MULTIPLE == 0 or prompt_width == p
    for i in range(8):
      # Padded back with <pad> (id 0) on both sides it is an original row:
      # the columns dropped were padding, and every real token is kept.
      row = np.concatenate([
          np.zeros(p - prompt_width, b["tokens"].dtype),
          b["tokens"][i],
          np.zeros(512 - width, b["tokens"].dtype),
      ]).tobytes()
      assert lengths[row] == b["response_mask"][i].sum()
      assert b["mask"][i].sum() == (b["tokens"][i] != 0).sum()
      seen.add(row)
  assert len(seen) == 48
  # Sorted by length: the groups' widths differ, the shortest well below T.
  assert min(widths) < 512 and len(set(widths)) > 1
  if context_fraction:
    assert min(prompt_widths) < p and max(prompt_widths) > 64
  else:
    assert prompt_widths == [p] * 6
  again = sft.length_grouped(iter(map(sft.sft_batch, full)), 6, seed=0)
  for b in out:
    np.testing.assert_array_equal(next(again)["tokens"], b["tokens"])


def test_sft_train_resumes_bit_for_bit(tmp_path):
  """Interrupted after a checkpoint, the run ends where an unbroken one does."""
  tok = task_tokenizer.load_task_tokenizer(
      task_tokenizer.build_task_tokenizer(tmp_path / "tok", "countdown")
  )
  data = PromptDataset(
      TaskSource("train", 24, task="countdown"),
      tok,
      max_prompt_len=24,
      max_new_tokens=512,
  )
  settings = sft.SftSettings(
      num_steps=4,
      batch_size=4,
      learning_rate=3e-3,
      log_every=1,
      length_groups=3,
      checkpoint_every=2,
  )
  run = functools.partial(
      sft.sft_train,
      _model(vocab_size=len(tok)),
      data,
      callback=lambda s, m: None,
  )
  unbroken, history = run(settings, workdir=str(tmp_path / "a"))
  # The same run killed after step 2: its step-4 checkpoint never landed.
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  shutil.rmtree(tmp_path / "b" / "checkpoints" / "4")
  evaluated = []
  resumed, resumed_history = run(
      dataclasses.replace(settings, evaluate_every=3),
      workdir=str(tmp_path / "b"),
      evaluate=lambda m: evaluated.append(m) or {"eval/x": 1.0},
  )
  assert [s for s, _ in resumed_history] == [3, 4]
  assert len(evaluated) == 2  # at step 3 and at the last step
  assert resumed_history[-1][1]["eval/x"] == 1.0
  assert resumed_history[-1][1]["loss/ce"] == history[-1][1]["loss/ce"]
  jax.tree.map(
      np.testing.assert_array_equal,
      nnx.state(unbroken, nnx.Param),
      nnx.state(resumed, nnx.Param),
  )
