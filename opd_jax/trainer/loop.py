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
"""The training loop: prompts -> rollouts -> jitted step -> metrics -> eval -> checkpoint."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from opd_jax import sharding
from opd_jax.data.iterator import PromptIterator
from opd_jax import evaluation
from opd_jax import methods
from opd_jax.evaluation.evaluate import evaluate as evaluate_model
from opd_jax.rollouts import default_eos_ids, sample
from opd_jax.trainer import builders, plots, reporting
from opd_jax.trainer import self_teacher, stage
from opd_jax.trainer.checkpointing import Checkpointer
from opd_jax.trainer.plan import RunPlan, plan_run, split_abstract
from opd_jax.trainer.run_config import RunConfig
from opd_jax.trainer import memory as memory_lib
from opd_jax.trainer.update import compile_ahead
from opd_jax.trainer.workdir import CONFIG_FILE, prepare_workdir


class TrainingDivergedError(RuntimeError, ValueError):
  """Too many consecutive steps had a non-finite loss or gradient.

  A ValueError too, so the CLI prints it as one `error:` line.
  """


class TrainingInterrupted(KeyboardInterrupt):
  """SIGINT / SIGTERM stopped the run after saving its step.

  `signum` is the signal; the CLI exits with 128 + signum (130, 143).
  """

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


class _StopRequests:
  """Turns SIGINT / SIGTERM into a request the loop answers between steps.

  The step in flight finishes, then the loop saves and stops (TPU VMs send
  SIGTERM some time before preemption). A second signal stops at once.
  Only in the main thread (signal handlers cannot be set elsewhere).
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:  # the second one: no more waiting
      raise TrainingInterrupted(
          f"{signal.Signals(signum).name} again: stopped without saving",
          signum,
      )
    self.signum = signum
    print(
        f"\n{signal.Signals(signum).name}: saving after the current step"
        " (send it again to stop at once)",
        file=sys.stderr,
        flush=True,
    )

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False


def _on_policy(run: RunConfig, step: int) -> bool:
  """The per-step on-policy coin: True with probability `lmbda` (the
  on-policy fraction), fixed per step."""
  lmbda = run.rollouts.lmbda
  if lmbda >= 1.0:
    return True
  return bool(np.random.default_rng([run.seed, step, 7]).random() < lmbda)


def dry_run(run: RunConfig, *, memory: bool = True) -> dict[str, Any]:
  """Checks config, shapes, shardings and memory without loading weights.

  Builds both models abstractly on the planned mesh, traces the step with
  `jax.eval_shape`, then compiles the update step and the sampler ahead on
  the abstract arguments (nothing runs) and prints parameter counts, the
  mesh and each program's memory per device (`trainer.memory`), and how it
  compares with the device's memory where the platform reports it.
  `memory=False` skips the compiles (traces only). Returns the figures it
  printed.
  """
  plan = plan_run(run, allow_preset_fallback=True)
  sgraph, params = split_abstract(plan.abstract_model("student"))
  tgraph, teacher = split_abstract(plan.abstract_model("teacher"))
  batch = plan.abstract_batch()
  state_sh, out_metrics = _trace_step(plan, sgraph, tgraph, params, teacher)
  step_mem = sampler_mem = None
  if memory:
    if jax.process_index() == 0:  # minutes for billion-parameter models
      print(
          "dry run: compiling the update step and the sampler ahead of time"
          " (nothing runs; --nodry_run_memory only traces) ...",
          flush=True,
      )
    # Compiled ahead on the abstract arguments: what each device would hold.
    step_mem = memory_lib.step_memory(plan, sgraph, params, tgraph, teacher)
    sampler_mem = memory_lib.sampler_memory(
        plan, {"student": (sgraph, params), "teacher": (tgraph, teacher)}
    )
  report = {
      "mesh": dict(plan.mesh.shape),
      "devices": jax.device_count(),
      "processes": jax.process_count(),
      "student": plan.student_from,
      "teacher": plan.teacher_from,
      "student_params": plan.student_config.num_params(),
      "teacher_params": plan.teacher_config.num_params(),
      "method": run.method_name,
      "metrics": sorted(out_metrics),
      "step_memory": step_mem and step_mem.as_dict(),
      "sampler_memory": sampler_mem and sampler_mem.as_dict(),
      "batch": {k: list(v.shape) for k, v in batch.items()},
      "param_shardings": {
          sharding.path_str(p): str(s.spec)
          for p, s in jax.tree_util.tree_flatten_with_path(state_sh.params)[0]
      },
  }
  if jax.process_index() == 0:
    _print_dry_run(report, plan, step_mem, sampler_mem)
  return report


def _trace_step(plan: RunPlan, sgraph, tgraph, params, teacher):
  """Traces the plan's step (and a staged method's stage) on abstract
  arguments: (state shardings, the step's metrics)."""
  abstract_state = plan.abstract_state(params)
  batch = plan.abstract_batch()
  with jax.set_mesh(plan.mesh):
    fn, state_sh, _, _ = plan.compile_step(
        abstract_state,
        teacher,
        batch,
        student_graphdef=sgraph,
        teacher_graphdef=tgraph,
    )
    out_state, out_metrics = jax.eval_shape(fn, abstract_state, teacher, batch)
    if methods.has_stage(plan.method):
      _check_stage_shapes(plan, sgraph, tgraph, params, teacher, batch)
  if jax.tree.structure(out_state) != jax.tree.structure(abstract_state):
    raise AssertionError("the step changes the train state's structure")
  return state_sh, out_metrics


def _print_dry_run(report, plan: RunPlan, step_mem, sampler_mem) -> None:
  """The dry run's lines: mesh, models, shardings, each program's memory."""
  print(
      f"dry run: mesh {report['mesh']} over {report['devices']} devices,"
      f" {report['processes']} process(es)"
  )
  for role in ("student", "teacher"):
    print(f"  {role} {report[role]}: {report[role + '_params']:,} parameters")
  print(f"  method {report['method']}; batch {report['batch']}")
  for name, spec in report["param_shardings"].items():
    print(f"  {name:40s} {spec}")
  print("  step traced: metrics " + ", ".join(report["metrics"]))
  if step_mem is None:
    return
  print(step_mem.line("step"))
  print(sampler_mem.line("sampler"))
  device_bytes = memory_lib.device_memory_bytes()
  if device_bytes:
    need = max(step_mem.total_bytes, sampler_mem.total_bytes)
    verdict = "fits" if need <= device_bytes else "does NOT fit"
    print(
        f"device memory: {device_bytes / memory_lib.GIB:.2f} GiB per"
        f" device; the larger program ({need / memory_lib.GIB:.2f} GiB)"
        f" {verdict}"
    )


def _check_stage_shapes(plan, sgraph, tgraph, params, teacher, batch):
  """Traces a staged method's `prepare` (no compile): its outputs must be
  the extras the step was traced with."""
  prepare = stage.compile_prepare(
      plan.method,
      sgraph,
      tgraph,
      sampling=plan.sampling,
      eos_ids=plan.student_config.eos_token_ids,
      pad_id=0,
      compute_dtype=plan.compute_dtype,
  )
  base = {k: batch[k] for k in methods.base.BASE_BATCH_KEYS}
  key = jax.eval_shape(lambda: stage.stage_key(0, 0))  # runs nothing
  got = jax.eval_shape(prepare, params, teacher, base, key)
  want = {k: v for k, v in batch.items() if k not in base}
  shapes = lambda d: {k: (tuple(v.shape), str(v.dtype)) for k, v in d.items()}
  if shapes(got) != shapes(want):
    raise AssertionError(
        f"{plan.run.method_name}.prepare returns {shapes(got)}, but"
        f" prepare_shapes announced {shapes(want)}"
    )


class Trainer:
  """Holds the run's pieces; `run()` trains to `config.total_steps`."""

  def __init__(self, run: RunConfig, workdir: str, *, restart: bool = False):
    """Plans, loads and compiles `run` in `workdir`.

    Args:
      run: the typed run config (`config.start_run` makes one from the
        trainer ConfigDict: the one boundary, in the scripts).
      workdir: the run directory; a rerun with the same config resumes.
      restart: start over in a workdir that holds a different run (its
        files move to `previous_runs/`); without it that is an error.
    """
    self.plan = plan = plan_run(run)
    self.run_config, self.workdir = run, workdir
    self.is_main = jax.process_index() == 0
    same_run = prepare_workdir(
        workdir, run, restart=restart, is_main=self.is_main
    )
    self.student_config = plan.student_config
    self.mesh, self.method, self.sampling = (
        plan.mesh,
        plan.method,
        plan.sampling,
    )
    self._load_data()
    self._build_and_compile()
    self.checkpointer = Checkpointer(
        workdir,
        max_to_keep=run.logging.keep_checkpoints,
        async_save=run.logging.async_checkpointing,
    )
    self.data_state = None
    restored = self.checkpointer.restore_latest(self.abstract_state)
    if restored is not None:
      self.state, self.data_state, step = restored
      print(f"resumed from {self.checkpointer.directory} at step {step}")
    self.iterator = PromptIterator(
        self.train_data,
        global_batch_size=run.data.batch_size,
        seed=run.seed,
        state=self.data_state,
    )
    self.start_step = int(self.state.step)
    self.writer = reporting.create_writer(
        workdir,
        is_main_process=self.is_main,
        # A rerun of this run drops the lines after the step it restarts
        # from (all of them when it was killed before its first checkpoint),
        # so every step is in metrics.jsonl exactly once.
        resume_step=self.start_step if same_run else None,
    )
    if not same_run:
      self.writer.write_hparams(reporting.flatten(run.to_dict()))
    if self.is_main:  # what export / sample need to rebuild the student
      with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        f.write(run.to_json(indent=2))

  def _load_data(self) -> None:
    """Tokenizer, training and evaluation data, grader: an empty or
    unreadable dataset, or an eval row whose answer cannot be graded,
    fails before any compile."""
    run = self.run_config
    self.tokenizer = builders.load_tokenizer(run.models)
    builders.check_teacher_tokenizer(run, self.tokenizer)
    self.train_data = builders.train_dataset(run, self.tokenizer)
    self.eval_data, self.grader = None, None
    if run.logging.eval_every and run.data.has_eval_rows:
      self.eval_data = builders.eval_dataset(run, self.tokenizer)
    if self.eval_data is not None:
      self.grader = evaluation.grader_for(self.eval_data.source)
      evaluation.check_gradable(self.grader, self.eval_data)
    self.eos_ids = default_eos_ids(self.student_config, self.tokenizer)

  def _build_and_compile(self) -> None:
    """Loads both models, compiles the step ahead of time (its memory
    logged) and a staged method's stage; the state at step 0."""
    plan, run = self.plan, self.run_config
    with jax.set_mesh(self.mesh):
      student = builders.build_model(
          run,
          "student",
          self.mesh,
          dtype=plan.dtype,
          vocab_size=self.student_config.vocab_size,
      )
      teacher = builders.build_model(
          run, "teacher", self.mesh, dtype=plan.dtype
      )
    self.student_graphdef, student_state = nnx.split(student)
    self.teacher_graphdef, teacher_state = nnx.split(teacher)
    # A live or EMA self-teacher comes from the train state, not from here.
    self.teacher_params = self_teacher.frozen_params(
        run.teacher, teacher_state.to_pure_dict()
    )
    self.teacher = teacher
    params = student_state.to_pure_dict()
    abstract_state = plan.abstract_state(params)
    batch = plan.abstract_batch()
    if self.is_main:  # the longest silent phase of a start
      print(f"compiling the {run.method_name} train step ...", flush=True)
    with jax.set_mesh(self.mesh):
      jitted, self.state_sh, teacher_sh, self.batch_sh = plan.compile_step(
          abstract_state,
          self.teacher_params,
          batch,
          student_graphdef=self.student_graphdef,
          teacher_graphdef=self.teacher_graphdef,
          eos_ids=self.eos_ids,
      )
      self.state = jax.jit(plan.init_state, out_shardings=self.state_sh)(params)
      abstract = sharding.with_shardings
      self.abstract_state = abstract(abstract_state, self.state_sh)
      self.step_fn, memory = compile_ahead(
          jitted,
          self.abstract_state,
          abstract(self.teacher_params, teacher_sh),
          abstract(batch, {k: self.batch_sh[k] for k in batch}),
      )
    self.prepare_fn = None
    if methods.has_stage(self.method):
      self.prepare_fn = stage.compile_prepare(
          self.method,
          self.student_graphdef,
          self.teacher_graphdef,
          **self._stage_settings(),
          compute_dtype=plan.compute_dtype,
      )
    if memory is not None and self.is_main:
      logging.info(
          "train step compiled: %.1f MiB arguments, %.1f MiB temporaries,"
          " %.1f MiB outputs per device",
          memory.argument_size_in_bytes / 2**20,
          memory.temp_size_in_bytes / 2**20,
          memory.output_size_in_bytes / 2**20,
      )

  def _stage_settings(self) -> dict[str, Any]:
    """A staged method's rollout settings (its stage and the token map's)."""
    return dict(
        sampling=self.sampling,
        eos_ids=self.eos_ids,
        pad_id=self.train_data.pad_id,
    )

  def student(self):
    """The student model with the current parameters."""
    return nnx.merge(self.student_graphdef, self.state.params)

  def _batch(self, step: int, host: dict[str, Any]) -> dict[str, jax.Array]:
    """Rollouts (or dataset responses) for `step` as the step's batch, with
    the teacher's own sequences and a staged method's stage outputs."""
    run = self.run_config
    prompt = sharding.global_batch(
        (host["prompt"], host["prompt_mask"]), self.mesh
    )
    r = None
    if _on_policy(run, step):
      r = self._rollouts(step, host, prompt)
      batch = {
          "tokens": r.tokens,
          "mask": r.mask,
          "response_mask": r.response_mask,
          "sampler_logprobs": r.logprobs,
      }
    else:
      batch = self._dataset_batch(host, prompt)
    # The teacher's own prompt + the same response ids (teacher context).
    batch.update(
        self_teacher.teacher_sequences(
            host, batch, self.mesh, check=step == self.start_step
        )
    )
    prepared = None
    if self.prepare_fn is not None:
      prepared = self.prepare_fn(
          self.state.params,
          self._step_teacher_params(),
          batch,
          stage.stage_key(run.seed, step),
      )
      batch.update(prepared)
    every = run.logging.token_map_every
    if r is not None and every and (step + 1) % every == 0:
      self._write_token_map(step + 1, r, host, batch, prepared=prepared)
    return jax.device_put(batch, self.batch_sh)

  def _rollouts(self, step: int, host, prompt):
    """The step's rollouts from `config.rollout_source`: the student's,
    the teacher's (after its own prompt under a teacher context) or their
    mixture's; the student's sequence is its prompt and the response."""
    run = self.run_config
    source = run.rollouts.rollout_source
    key = jax.random.fold_in(
        jax.random.fold_in(jax.random.PRNGKey(run.seed), step), 1
    )
    teacher = self._step_teacher()  # a live / EMA one from the state
    models, weights = {
        "student": ([self.student()], None),
        "teacher": ([teacher], None),
        "mixture": (
            [self.student(), teacher],
            run.rollouts.mixture_weights,
        ),
    }[source]
    sample_prompt, sample_mask = prompt
    if source != "student" and "teacher_prompt" in host:
      sample_prompt, sample_mask = sharding.global_batch(
          (host["teacher_prompt"], host["teacher_prompt_mask"]), self.mesh
      )
      if source == "mixture":
        sample_prompt = (prompt[0], sample_prompt)
        sample_mask = (prompt[1], sample_mask)
    r = sample(
        models,
        sample_prompt,
        sample_mask,
        key,
        max_new_tokens=run.data.max_new_tokens,
        weights=weights,
        compute_dtype=self.plan.compute_dtype,
        **self._stage_settings(),
    )
    return r.replace(prompt=prompt[0], prompt_mask=prompt[1])

  def _dataset_batch(self, host, prompt) -> dict[str, jax.Array]:
    """An off-policy step's batch: the dataset's reference responses."""
    response, response_mask = sharding.global_batch(
        (host["response"], host["response_mask"]), self.mesh
    )
    return {
        "tokens": jnp.concatenate([prompt[0], response], axis=1),
        "mask": jnp.concatenate([prompt[1], response_mask], axis=1),
        "response_mask": response_mask,
        "sampler_logprobs": jnp.zeros(response.shape, jnp.float32),
    }

  def _step_teacher_params(self):
    """The parameters the step's teacher scores with (as the step picks
    them: `self_teacher.step_teacher_params`)."""
    return self_teacher.step_teacher_params(
        self.run_config.teacher.step_weights, self.state, self.teacher_params
    )

  def _step_teacher(self):
    """The step's teacher as a model (sampling, token maps)."""
    if self.run_config.teacher.step_weights == "external":
      return self.teacher
    return nnx.merge(self.teacher_graphdef, self._step_teacher_params())

  def _write_token_map(
      self, step: int, rollout, host, batch, prepared=None
  ) -> None:
    """The step's rollouts as a token map page in WORKDIR/plots (a staged
    method's sets from `prepared`, the stage outputs the step trains on;
    under a teacher context the teacher scores its own sequence)."""
    from opd_jax.diagnostics import token_map  # pylint: disable=g-import-not-at-top

    token_map.write_token_map(
        os.path.join(self.workdir, "plots", f"token_map_{step:06d}.html"),
        self.student(),
        self._step_teacher(),
        rollout,
        self.tokenizer,
        teacher_tokens=batch.get(self_teacher.TEACHER_TOKENS),
        teacher_mask=batch.get(self_teacher.TEACHER_MASK),
        # Host answers are this process's slice; verdicts need them all.
        answers=host.get("answer") if jax.process_count() == 1 else None,
        grader=self.grader,
        # The run's method names the tokens it trains on (a staged one from
        # its stage's outputs on this batch).
        method=self.method,
        stage=token_map.StageSettings(
            sampling=self.sampling,
            eos_ids=self.eos_ids,
            pad_id=self.train_data.pad_id,
        ),
        prepared=prepared,
        seed=self.run_config.seed,
        meta={"step": step},
    )

  def evaluate(self, step: int) -> dict[str, float]:
    d = self.run_config.data
    result = evaluate_model(
        self.student(),
        self.eval_data,
        self.tokenizer,
        self.grader,
        key=jax.random.PRNGKey(self.run_config.seed),
        mesh=self.mesh,
        batch_size=d.batch_size,
        max_new_tokens=d.max_new_tokens,
        eos_ids=self.eos_ids,
    )
    out = result.metrics()
    self.writer.write_scalars(step, out)
    self.writer.write_texts(step, {"eval/sample": result.responses[0]})
    return out

  def save(self, step: int) -> None:
    self.checkpointer.save(step, self.state, self.iterator.get_state())

  def run(self) -> dict[str, float]:
    """Trains from the restored step to `total_steps`; returns last metrics."""
    run, log = self.run_config, self.run_config.logging
    total_steps = run.total_steps
    last: dict[str, float] = {}
    shown: dict[str, Any] = {}
    bar = reporting.ProgressBar(
        total_steps,
        self.start_step,
        is_main_process=self.is_main,
        log_every=max(log.log_every, 1),
    )
    saved = self.start_step
    try:
      with _StopRequests() as stop, jax.set_mesh(self.mesh):
        for step in range(self.start_step, total_steps):
          host = next(self.iterator)
          t0 = time.time()
          batch = self._batch(step, host)
          self.state, m = self.step_fn(self.state, self.teacher_params, batch)
          done = step + 1
          if done % log.log_every == 0 or done == total_steps:
            m = jax.device_get(m)
            m["train/step_time"] = time.time() - t0
            m["train/on_policy"] = float(_on_policy(run, step))
            self.writer.write_scalars(done, m)
            last = {k: float(v) for k, v in m.items()}
            shown = {k: m[k] for k in ("loss/total",) if k in m}
          # Every step's tokens count toward tokens/s, logged or not.
          bar.update(
              done,
              shown,
              tokens=round(float(m["rollout/len_mean"]) * run.data.batch_size),
          )
          self._check_skips(done, m)
          # Save first: a failing evaluation must not cost the step.
          if done % log.checkpoint_every == 0 or done == total_steps:
            self.save(done)
            saved = done
          if stop.signum is not None:
            self._stop(stop.signum, done, saved)
          if self.eval_data is not None and (
              log.eval_every and done % log.eval_every == 0
          ):
            scores = self.evaluate(done)
            last.update(scores)
            bar.write(
                f"step {done}: "
                + ", ".join(f"{k} {v:.4g}" for k, v in sorted(scores.items()))
            )
          if stop.signum is not None:  # came during the evaluation
            self._stop(stop.signum, done, saved)
    finally:
      self._close(bar)
    if self.is_main:
      plots.write_run_plots(self.workdir)
      print(self._where(total_steps))
    total = int(self.state.total_skips)
    if _mostly(total, total_steps):
      raise TrainingDivergedError(
          f"{_skipped(total, total_steps)}: the run trained on"
          f" {total_steps - total}. {self._divergence_advice({})}"
      )
    return last

  def _close(self, bar) -> None:
    bar.close()
    self.checkpointer.close()
    self.writer.close()
    if self.grader is not None:
      self.grader.close()

  def _check_skips(self, done: int, m) -> None:
    """Stops the run after `max_consecutive_skips` non-finite steps in a
    row, or as many in all when they are most of its steps."""
    limit = self.run_config.logging.max_consecutive_skips
    skips = int(self.state.consecutive_skips)
    if skips >= limit:
      raise TrainingDivergedError(
          f"{skips} consecutive steps (up to step {done}) had a"
          " non-finite loss or gradient; the parameters were left"
          f" unchanged by them. {self._divergence_advice(m)};"
          f" config.max_consecutive_skips = {limit}"
      )
    total = int(self.state.total_skips)
    if total >= limit and _mostly(total, done):
      raise TrainingDivergedError(
          f"{_skipped(total, done)}; the parameters were left unchanged"
          f" by them. {self._divergence_advice(m)};"
          f" config.max_consecutive_skips = {limit}"
      )

  def _divergence_advice(self, metrics) -> str:
    """Where to look: the teacher when its outputs are what is not finite."""
    m = jax.device_get(metrics)
    bad = sorted(
        k
        for k, v in m.items()
        if "teacher" in k and not np.all(np.isfinite(np.asarray(v)))
    )
    if bad:
      t = self.run_config.teacher
      return (
          f"The teacher's outputs are not finite ({bad[0]} ="
          f" {float(np.asarray(m[bad[0]]))}): check config.teacher"
          f" ({t.path or t.preset}), its weights' scale and"
          " config.dtype"
      )
    return "Lower optimizer.learning_rate or check the data"

  def _where(self, step: int) -> str:
    """Where the run's checkpoint, metrics and plots are."""
    w = self.workdir
    total = int(self.state.total_skips)
    skipped = (
        f", {total} of {step} steps skipped as non-finite" if total else ""
    )
    return (
        f"run at step {step}{skipped}: checkpoint"
        f" {os.path.join(self.checkpointer.directory, str(step))}, metrics"
        f" {os.path.join(w, 'metrics.jsonl')} (TensorBoard:"
        f" {os.path.join(w, 'tensorboard')}), plots {os.path.join(w, 'plots')}"
    )

  def _stop(self, signum: int, done: int, saved: int) -> None:
    """Saves step `done` (unless just saved) and raises TrainingInterrupted."""
    if saved != done:
      self.save(done)
    self.checkpointer.wait()  # on disk before the process exits
    name = signal.Signals(signum).name
    raise TrainingInterrupted(
        f"{name}: stopped at step {done} of {self.run_config.total_steps};"
        f" checkpoint {os.path.join(self.checkpointer.directory, str(done))},"
        f" metrics {os.path.join(self.workdir, 'metrics.jsonl')}. Rerun the"
        " same command to resume from it",
        signum,
    )


def _mostly(skipped: int, steps: int) -> bool:
  """More than half of the steps were skipped as non-finite."""
  return skipped > 0 and 2 * skipped > steps


def _skipped(skipped: int, steps: int) -> str:
  return (
      f"{skipped} of {steps} steps were skipped (a non-finite loss or gradient)"
  )


def train_and_evaluate(
    run: RunConfig, workdir: str, *, restart: bool = False
) -> dict[str, float]:
  """Trains `run` (resuming from `workdir` if it holds its checkpoints).

  A workdir holding a different run is an error unless `restart` (see
  `trainer.workdir.prepare_workdir`).
  """
  return Trainer(run, workdir, restart=restart).run()
