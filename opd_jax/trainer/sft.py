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
"""Supervised fine-tuning: cross-entropy on reference responses.

The demo's teacher is trained with it, and the student gets a short warm-up
with it; both reuse the distillation trainer's `TrainState`, optimizer and
`response_hidden`, so an SFT model and an OPD student are the same pytree.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from opd_jax import sharding
from opd_jax.data.dataset import PromptDataset
from opd_jax.data.iterator import PromptIterator
from opd_jax.models import response_hidden
from opd_jax.trainer.checkpointing import Checkpointer
from opd_jax.trainer.state import TrainState, init_state, make_optimizer
from opd_jax.trainer.update import guarded_update, jit_train_step

Batch = dict[str, jax.Array]


def sft_batch(host: dict[str, Any]) -> dict[str, np.ndarray]:
  """A `PromptDataset.batch` (with responses) as an SFT batch.

  Args:
    host: `prompt` int32 [B, P] left-padded, `prompt_mask` bool [B, P],
      `response` int32 [B, T] right-padded, `response_mask` bool [B, T].

  Returns:
    `tokens` int32 [B, P + T], `mask` bool [B, P + T] (False on padding)
    and `response_mask` bool [B, T] (the tokens the loss is taken on).
  """
  if "response" not in host:
    raise ValueError(
        "sft_batch: the batch has no 'response'; build the PromptDataset"
        " with max_new_tokens set and a source with reference responses"
    )
  return {
      "tokens": np.concatenate([host["prompt"], host["response"]], axis=1),
      "mask": np.concatenate(
          [host["prompt_mask"], host["response_mask"]], axis=1
      ),
      "response_mask": np.asarray(host["response_mask"], bool),
  }


# Trimmed response widths are multiples of this: at most T / 64 shapes
# compile, each once.
TRIM_MULTIPLE = 64


def _rounded_up(n: int, limit: int) -> int:
  """`n` rounded up to `TRIM_MULTIPLE`, at most `limit`."""
  return min(limit, -(-max(n, 1) // TRIM_MULTIPLE) * TRIM_MULTIPLE)


def length_grouped(
    batches: Iterator[dict[str, np.ndarray]], group: int, seed: int
) -> Iterator[dict[str, np.ndarray]]:
  """Regroups `group` batches at a time by length, then trims the padding.

  Long references padded to one width T waste most of an update on
  padding (Countdown's median reference is 180 of 512 tokens), and so do
  prompts padded to the room a worked demonstration needs when only some
  rows carry one. Rows of `group` consecutive batches are sorted by their
  real length (prompt + response) and cut back into `group` batches of the
  same size, yielded in a seeded random order; each batch's response is
  trimmed to its longest row and its prompt to its longest real prompt,
  both rounded up to `TRIM_MULTIPLE`: HF Trainer's `group_by_length`, in
  static shapes. Only trailing response padding and leading prompt
  padding are dropped, and positions count real tokens, so a row's loss is
  unchanged.

  Args:
    batches: `sft_batch` dicts (`tokens` [B, P + T], `mask` [B, P + T],
      `response_mask` [B, T]).
    group: batches regrouped together (>= 1).
    seed: the order of the regrouped batches.

  Yields:
    `sft_batch` dicts, of width P' + T' with P' <= P and T' <= T.
  """
  rng = np.random.default_rng([seed, 7])
  while True:
    chunk = [next(batches) for _ in range(group)]
    size = len(chunk[0]["tokens"])
    rows = {k: np.concatenate([b[k] for b in chunk]) for k in chunk[0]}
    t = rows["response_mask"].shape[1]
    p = rows["tokens"].shape[1] - t
    response_len = rows["response_mask"].sum(1)
    prompt_len = rows["mask"][:, :p].sum(1)
    order = np.argsort(response_len + prompt_len, kind="stable")
    for g in rng.permutation(group):
      take = order[g * size : (g + 1) * size]
      width = _rounded_up(int(response_len[take].max()), t)
      start = p - _rounded_up(int(prompt_len[take].max()), p)
      yield {
          "tokens": rows["tokens"][take, start : p + width],
          "mask": rows["mask"][take, start : p + width],
          "response_mask": rows["response_mask"][take, :width],
      }


def sft_loss(params, batch: Batch, *, graphdef) -> tuple[jax.Array, dict]:
  r"""Token-mean cross-entropy of the response tokens.

  .. math::
    L = -\frac{\sum_{b,t} m_{bt} \log p_\theta(y_{bt} \mid y_{b,<t})}
              {\max(\sum_{b,t} m_{bt}, 1)}

  The prompt never enters the loss (only the last T positions are scored)
  and padding is masked by `response_mask`.

  Args:
    params: the model's parameters (pure dict).
    batch: `tokens` [B, P + T], `mask` [B, P + T], `response_mask` [B, T].
    graphdef: from `nnx.split` of the model.

  Returns:
    (loss [], metrics) with `loss/ce` and `train/token_acc` (greedy
    next-token accuracy on the response tokens).
  """
  tokens, mask = batch["tokens"], batch["mask"]
  response_mask = batch["response_mask"].astype(bool)
  t = response_mask.shape[1]
  model = nnx.merge(graphdef, params)
  hidden = response_hidden(model, tokens, mask, t)  # [B, T, D]
  # V is tiny for the task tokenizer; a [B, T, V] head is fine here.
  logits = model.apply_head(hidden)  # [B, T, V] float32
  labels = tokens[:, -t:]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  ce = jnp.where(response_mask, ce, 0.0)  # before the sum: finite grads
  count = jnp.maximum(response_mask.sum(dtype=jnp.float32), 1.0)
  loss = ce.sum() / count
  hit = (logits.argmax(-1) == labels) & response_mask
  return loss, {
      "loss/ce": loss,
      "train/token_acc": hit.sum(dtype=jnp.float32) / count,
  }


def sft_step(
    state: TrainState,
    batch: Batch,
    *,
    graphdef,
    optimizer: optax.GradientTransformation,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SFT update (pure; jit it with the state donated).

  A step whose loss or gradient is not finite leaves params and optimizer
  state untouched and counts a skip, as the distillation step does.
  """
  (loss, metrics), grads = jax.value_and_grad(
      functools.partial(sft_loss, graphdef=graphdef), has_aux=True
  )(state.params, batch)
  new_state, update_metrics = guarded_update(state, loss, grads, optimizer)
  metrics = {**metrics, **update_metrics}
  return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def compile_sft_step(
    mesh,
    abstract_state: TrainState,
    abstract_batch: Batch,
    *,
    graphdef,
    optimizer,
):
  """`sft_step` jitted once with explicit shardings and the state donated.

  Returns:
    (jitted step, state shardings, batch shardings).
  """
  fn, state_sh, _, batch_sh = jit_train_step(
      functools.partial(sft_step, graphdef=graphdef, optimizer=optimizer),
      mesh,
      abstract_state,
      abstract_batch,
  )
  return fn, state_sh, batch_sh


@dataclasses.dataclass(frozen=True)
class SftSettings:
  """How `sft_train` trains: the AdamW schedule, the batches, the cadences.

  Attributes:
    num_steps: optimizer updates.
    batch_size: sequences per update.
    learning_rate, warmup_steps, end_lr_fraction, weight_decay, clip_norm:
      the AdamW schedule of `make_optimizer`.
    seed: the shuffling (and state) seed.
    length_groups: when > 0, batches are regrouped by response length this
      many at a time and trimmed (`length_grouped`): for long references
      of uneven length. 0 keeps the iterator's batches at full width.
    log_every: report every this many steps (and at the last one).
    checkpoint_every: steps between checkpoints (>= 1 when `sft_train` has
      a workdir); the last step is always saved.
    evaluate_every: steps between calls of `sft_train`'s `evaluate` (and at
      the last step); 0 never evaluates during training.
  """

  num_steps: int = 1000
  batch_size: int = 32
  learning_rate: float = 1e-3
  warmup_steps: int = 0
  end_lr_fraction: float = 0.1
  weight_decay: float = 0.0
  clip_norm: float = 1.0
  seed: int = 0
  length_groups: int = 0
  log_every: int = 100
  checkpoint_every: int = 0
  evaluate_every: int = 0

  def __post_init__(self):
    if self.num_steps < 1 or self.batch_size < 1:
      raise ValueError(
          "sft_train: expected num_steps >= 1 and batch_size >="
          f" 1, got {self.num_steps} and {self.batch_size}"
      )

  def optimizer(self) -> optax.GradientTransformation:
    return make_optimizer(
        learning_rate=self.learning_rate,
        total_steps=self.num_steps,
        warmup_steps=self.warmup_steps,
        end_lr_fraction=self.end_lr_fraction,
        weight_decay=self.weight_decay,
        clip_norm=self.clip_norm,
    )

  def checkpoint_now(self, step: int) -> bool:
    return step % self.checkpoint_every == 0 or step == self.num_steps

  def evaluate_now(self, step: int) -> bool:
    if not self.evaluate_every:
      return False
    return step % self.evaluate_every == 0 or step == self.num_steps

  def log_now(self, step: int) -> bool:
    last = step == self.num_steps
    return step % self.log_every == 0 or last or self.evaluate_now(step)


def sft_train(
    model,
    dataset: PromptDataset,
    settings: SftSettings = SftSettings(),
    *,
    mesh=None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    workdir: str | None = None,
    evaluate: Callable[[Any], dict[str, float]] | None = None,
):
  """Fine-tunes `model` on `dataset`'s reference responses.

  Batches come from a `PromptIterator` (seeded shuffle, epochs wrap), so
  the result is a pure function of the model, the data and the settings;
  a run resumed from `workdir` ends bit for bit where an uninterrupted one
  does (the state is restored and the iterator replayed past the batches
  used).

  Args:
    model: an opd_jax Transformer (its parameters are not modified).
    dataset: a `PromptDataset` built with `max_new_tokens` and responses.
    settings: steps, batch, schedule and cadences (`SftSettings`).
    mesh: a mesh for the step's shardings; one over all devices if None.
    callback: receives (step, host floats) at each logged step; None
      prints a line.
    workdir: when set, the train state is checkpointed (orbax) into
      `workdir/checkpoints` every `settings.checkpoint_every` steps and at
      the end, and a run finding a checkpoint there resumes from its step.
      The caller makes sure the checkpoint belongs to the same settings.
    evaluate: called with the model at `settings.evaluate_every`; the
      metrics it returns join that step's log.

  Returns:
    (the trained model, list of (step, metrics) logged).
  """
  _check_arguments(dataset, settings, workdir)
  mesh = mesh or sharding.make_mesh(sharding.MeshConfig(1, -1, 1))
  graphdef, model_state = nnx.split(model)
  params = jax.tree.map(jnp.copy, model_state.to_pure_dict())
  batches = sft_batches(
      dataset, settings.batch_size, settings.seed, settings.length_groups
  )
  with jax.set_mesh(mesh):
    fn, state, batch_sh = _compiled_step_and_state(
        mesh, dataset, params, graphdef, settings
    )
    checkpointer = Checkpointer(workdir, max_to_keep=2) if workdir else None
    start = 0
    if checkpointer:
      state, start = _resumed(checkpointer, state, batches)
    if not evaluate:
      settings = dataclasses.replace(settings, evaluate_every=0)
    state, history = _run_steps(
        fn,
        state,
        (batches, batch_sh),
        start,
        settings,
        checkpointer,
        callback or _print_metrics,
        lambda params: evaluate(nnx.merge(graphdef, params)),
    )
    if checkpointer:
      checkpointer.close()
  return nnx.merge(graphdef, state.params), history


def _run_steps(
    fn, state, data, start, settings, checkpointer, report, evaluate
):
  """Steps `start + 1 .. settings.num_steps`: (final state, logged history).

  `data` is (host batches, their shardings); `evaluate(params)` gives the
  metrics of an evaluation step.
  """
  batches, batch_sh = data
  history = []
  t0 = time.time()
  for done in range(start + 1, settings.num_steps + 1):
    state, metrics = fn(state, jax.device_put(next(batches), batch_sh))
    if checkpointer and settings.checkpoint_now(done):
      checkpointer.save(done, state, {"step": done})
    if settings.log_now(done):
      m = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if settings.evaluate_now(done):
        m.update(evaluate(state.params))
      m["train/elapsed"] = time.time() - t0
      history.append((done, m))
      report(done, m)
  return state, history


def _check_arguments(dataset, settings: SftSettings, workdir) -> None:
  if dataset.max_new_tokens is None:
    raise ValueError(
        "sft_train: dataset.max_new_tokens is None; the SFT"
        " dataset needs reference responses"
    )
  if workdir and settings.checkpoint_every < 1:
    raise ValueError(
        "sft_train: checkpoint_every must be >= 1 with a workdir, got"
        f" {settings.checkpoint_every}"
    )


def sft_batches(
    dataset: PromptDataset, batch_size: int, seed: int, length_groups: int
) -> Iterator[dict[str, np.ndarray]]:
  """The host batches `sft_train` steps on: a pure function of `seed`."""
  batches = map(
      sft_batch,
      PromptIterator(dataset, global_batch_size=batch_size, seed=seed),
  )
  if length_groups:
    batches = length_grouped(batches, length_groups, seed)
  return batches


def _compiled_step_and_state(mesh, dataset, params, graphdef, settings):
  """(`sft_step` compiled for the untrimmed batch shape, the initial
  state placed with its shardings, the batch shardings)."""
  optimizer, batch_size = settings.optimizer(), settings.batch_size
  key = jax.random.PRNGKey(settings.seed)
  abstract_state = jax.eval_shape(
      lambda p: init_state(p, optimizer, key), params
  )
  abstract_batch = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
      sft_batch(dataset.batch(np.arange(batch_size) % len(dataset))),
  )
  fn, state_sh, batch_sh = compile_sft_step(
      mesh,
      abstract_state,
      abstract_batch,
      graphdef=graphdef,
      optimizer=optimizer,
  )
  state = jax.jit(
      lambda p: init_state(p, optimizer, key), out_shardings=state_sh
  )(params)
  return fn, state, batch_sh


def _resumed(
    checkpointer: Checkpointer, state: TrainState, batches: Iterator
) -> tuple[TrainState, int]:
  """The latest checkpoint's state and step (`state` and 0 if none), with
  `batches` advanced past the batches that run used."""
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      state,
  )
  restored = checkpointer.restore_latest(abstract)
  if restored is None:
    return state, 0
  state, _, start = restored
  print(f"sft: resumed from step {start} ({checkpointer.directory})")
  # The batches are a pure function of the seed: replaying the ones
  # already used puts them where the interrupted run left them.
  for _ in range(start):
    next(batches)
  return state, start


def _print_metrics(step: int, metrics: dict[str, float]) -> None:
  extra = "".join(
      f" {k} {v:.3f}" for k, v in metrics.items() if k.startswith("eval/")
  )
  print(
      f"sft step {step}: loss {metrics['loss/ce']:.4f} token acc"
      f" {metrics['train/token_acc']:.3f}{extra}"
      f" ({metrics['train/elapsed']:.0f}s)",
      flush=True,
  )
