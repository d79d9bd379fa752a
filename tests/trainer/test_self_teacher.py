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
"""Self-distillation: self-teachers, the teacher's own prompt, bad input."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from opd_jax import sharding
from opd_jax import testing
from opd_jax.data.iterator import PromptIterator
from opd_jax.methods import topd_stage
from opd_jax.trainer import builders, loop, self_teacher
from opd_jax.trainer import stage as stage_lib
from opd_jax.trainer import step as steps
from opd_jax.trainer.config import ConfigError, start_run, to_run_config
from opd_jax.trainer.plan import plan_run


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  return testing.tiny_distillation_pair(str(tmp_path_factory.mktemp("pair")))


def _config(pair, **overrides):
  c = testing.tiny_train_config(pair, method="rkl", **overrides)
  c.lmbda = 0.0  # dataset responses: no sampler to compile
  return c


def _step(c, tokenizer):
  """One step of config `c` on the first batch: (batch, (state, metrics)).

  The student starts away from its checkpoint (theta_0 + noise), as after
  some training: a teacher at theta_0 then has something to teach.
  """
  plan = plan_run(to_run_config(c))
  data = builders.train_dataset(plan.run, tokenizer)
  host = next(PromptIterator(data, global_batch_size=c.batch_size, seed=0))
  mesh = plan.mesh
  with jax.set_mesh(mesh):
    student = builders.build_model(plan.run, "student", mesh, dtype=plan.dtype)
    teacher = builders.build_model(plan.run, "teacher", mesh, dtype=plan.dtype)
    sgraph, sstate = nnx.split(student)
    tgraph, tstate = nnx.split(teacher)
    params = sstate.to_pure_dict()
    prompt, pmask, response, rmask = sharding.global_batch(
        tuple(
            host[k]
            for k in ("prompt", "prompt_mask", "response", "response_mask")
        ),
        mesh,
    )
    batch = {
        "tokens": jnp.concatenate([prompt, response], 1),
        "mask": jnp.concatenate([pmask, rmask], 1),
        "response_mask": rmask,
        "sampler_logprobs": jnp.zeros(response.shape, jnp.float32),
    }
    batch.update(self_teacher.teacher_sequences(host, batch, mesh))
    fn = jax.jit(
        functools.partial(
            steps.train_step,
            student_graphdef=sgraph,
            teacher_graphdef=tgraph,
            method=plan.method,
            optimizer=plan.optimizer,
            teacher_weights=plan.run.teacher.step_weights,
        )
    )
    keys = iter(jax.random.split(jax.random.key(5), 64))
    params = jax.tree.map(
        lambda p: p + 0.05 * jax.random.normal(next(keys), p.shape), params
    )
    state = plan.init_state(params)
    teacher_params = self_teacher.frozen_params(
        plan.run.teacher, tstate.to_pure_dict()
    )
    return batch, jax.device_get(fn(state, teacher_params, batch))


@pytest.fixture(scope="module")
def tokenizer(pair):
  from opd_jax.data import tokenizer as tokenizers  # pylint: disable=g-import-not-at-top

  return tokenizers.load_tokenizer(pair["tokenizer"])


@pytest.fixture(scope="module")
def plain_opd(pair, tokenizer):
  """Plain OPD with the student's own checkpoint as external teacher."""
  c = _config(pair)
  c.teacher = pair["student"]
  return _step(c, tokenizer)


def _assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_empty_context_self_teacher_is_plain_opd(pair, tokenizer, plain_opd):
  c = _config(pair, teacher="self")  # frozen theta_0 by default
  c.teacher_context.template = "empty"
  batch, (state, metrics) = _step(c, tokenizer)
  np.testing.assert_array_equal(batch["teacher/tokens"], batch["tokens"])
  _, (want_state, want_metrics) = plain_opd
  assert metrics["loss/total"] > 0
  _assert_same(metrics, want_metrics)  # loss and grad norm, bit for bit
  _assert_same(state.params, want_state.params)  # so the gradients too


def test_a_solution_context_changes_the_teacher(pair, tokenizer, plain_opd):
  c = _config(pair, teacher="self")
  c.teacher_context.template = "solution"
  c.teacher_context.max_prompt_len = 96
  _, (_, metrics) = _step(c, tokenizer)
  _, (_, want) = plain_opd
  assert np.isfinite(metrics["loss/total"])
  assert metrics["loss/total"] != want["loss/total"]


@pytest.mark.parametrize("weights", ["initial", "live", "ema"])
def test_a_state_teacher_keeps_no_copy_of_theta_0(pair, weights):
  c = _config(pair, teacher="self")
  c.self_teacher.weights = weights
  plan = plan_run(to_run_config(c))
  with jax.set_mesh(plan.mesh):
    teacher = builders.build_model(
        plan.run, "teacher", plan.mesh, dtype=plan.dtype
    )
  leaves = jax.tree.leaves(nnx.state(teacher))
  abstract = [isinstance(x, jax.ShapeDtypeStruct) for x in leaves]
  # A live or EMA teacher's weights come from the train state: its graph
  # is all the loop keeps. The frozen theta_0 is loaded.
  assert leaves and all(abstract) == (weights != "initial"), abstract
  assert any(abstract) == (weights != "initial")
  assert teacher.config.num_layers == plan.student_config.num_layers


def test_ema_tracker_follows_the_updates():
  import optax  # pylint: disable=g-import-not-at-top

  opt = optax.chain(optax.sgd(1.0), self_teacher.ema_tracker(0.5))
  params = {"w": jnp.array([1.0, 2.0])}
  state = opt.init(params)
  updates, state = opt.update({"w": jnp.array([1.0, 1.0])}, state, params)
  new = optax.apply_updates(params, updates)  # [0, 1]
  np.testing.assert_allclose(self_teacher.ema_params(state)["w"], [0.5, 1.5])
  np.testing.assert_allclose(new["w"], [0.0, 1.0])


@pytest.mark.parametrize(
    "overrides,match",
    [
        (
            {"teacher": "self", "teacher_preset": "qwen3_0p6b"},
            r"config.teacher_preset: expected '' with config.teacher='self'",
        ),
        (
            {"self_teacher.weights": "ema"},
            r"config.self_teacher.weights: 'ema' needs config.teacher='self',"
            r" but a teacher is also given",
        ),
        (
            {"self_teacher.weights": "slow"},
            r"config.self_teacher.weights: expected one of",
        ),
        (
            {"teacher_context.template": "{question} {hint}"},
            r"names \{hint\}, which the data does not provide",
        ),
        (
            {"teacher_context.kl_clip": 5.0, "method": "minillm"},
            r"config.teacher_context.kl_clip: the pointwise clip applies to",
        ),
        (
            {
                "teacher_context.template": "solution",
                "teacher_context.max_prompt_len": 60,
                "max_new_tokens": 460,
            },
            r"config.teacher_context.max_prompt_len: 60 \+ config.max_new"
            r"_tokens=460 = 520 exceeds the teacher's max_position_embeddings",
        ),
    ],
)
def test_bad_settings_are_one_line_before_compiling(pair, overrides, match):
  c = testing.tiny_train_config(pair, **overrides)
  with pytest.raises((ValueError, ConfigError), match=match):
    plan_run(to_run_config(c))


def test_file_template_field_needs_its_column(pair, tmp_path):
  path = tmp_path / "q.jsonl"
  path.write_text(json.dumps({"question": "q", "sol": "s"}) + "\n")
  c = testing.tiny_train_config(pair)
  c.data.source, c.data.path = "file", str(path)
  c.teacher_context.template = "solution"
  with pytest.raises(ValueError, match=r"set config.data.<name>_field"):
    plan_run(to_run_config(c))
  c.data.solution_field = "sol"
  plan_run(to_run_config(c))


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["ema"])
def test_resume_with_a_state_teacher_is_bit_identical(pair, tmp_path, weights):
  c = testing.tiny_train_config(
      pair, total_steps=3, checkpoint_every=1, teacher="self"
  )
  c.self_teacher.weights = weights
  c.self_teacher.ema_decay = 0.5
  c.teacher_context.template = "solution"
  c.teacher_context.max_prompt_len = 64
  # A token map at step 3, scored by the EMA teacher under its context; the
  # resumed run writes it again, and the page must not change the training.
  c.token_map_every = 3
  workdir = str(tmp_path / "run")
  first = loop.Trainer(start_run(c), workdir)
  first.run()
  final = jax.device_get(first.state)
  page = os.path.join(workdir, "plots", "token_map_000003.html")
  with open(page, encoding="utf-8") as f:
    assert "its own prompt (a teacher context)" in f.read()
  if weights == "ema":  # the EMA moved away from theta_0 and the params
    ema = self_teacher.ema_params(final.opt_state)
    assert not np.array_equal(
        ema["final_norm"]["scale"], final.params["final_norm"]["scale"]
    )
  # Lose the last step's checkpoint, as a kill during it would.
  latest = os.path.join(workdir, "checkpoints", "3")
  for root, _, files in os.walk(latest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")
  second = loop.Trainer(start_run(c), workdir)
  assert second.start_step == 2
  second.run()
  _assert_same(jax.device_get(second.state.params), final.params)
  _assert_same(jax.device_get(second.state.opt_state), final.opt_state)


@pytest.mark.slow
@pytest.mark.parametrize(
    "source,weights",
    [("teacher", "initial"), ("teacher", "live"), ("mixture", "live")],
)
def test_teacher_rollouts_follow_the_teachers_own_prompt(
    pair, tmp_path, source, weights
):
  # rollout_source='teacher' under a context: the teacher samples after its
  # own prompt, with the step's teacher weights (theta_0, or the live
  # student from the state); the student's sequence is its prompt and the
  # same response ids. A mixture decodes the student after the student's
  # prompt and the teacher after its own, mixing their next-token
  # distributions.
  c = testing.tiny_train_config(pair, teacher="self", rollout_source=source)
  c.self_teacher.weights = weights
  c.teacher_context.template = "solution"
  c.teacher_context.max_prompt_len = 64
  trainer = loop.Trainer(start_run(c), str(tmp_path / "run"))
  if weights == "live":  # as after some training: away from theta_0
    params = jax.tree.map(lambda p: p * 1.5, trainer.state.params)
    trainer.state = trainer.state.replace(params=params)
  host = next(trainer.iterator)
  with jax.set_mesh(trainer.mesh):
    batch = trainer._batch(0, host)  # pylint: disable=protected-access
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), 0), 1)
    teacher = nnx.merge(
        trainer.student_graphdef,
        trainer.state.params if weights == "live" else trainer.teacher_params,
    )
    models, weights, prompts, masks = (
        [teacher],
        None,
        jnp.asarray(host["teacher_prompt"]),
        jnp.asarray(host["teacher_prompt_mask"]),
    )
    if source == "mixture":
      models = [trainer.student(), teacher]
      weights = (1 - c.mixture_alpha, c.mixture_alpha)
      prompts = (jnp.asarray(host["prompt"]), prompts)
      masks = (jnp.asarray(host["prompt_mask"]), masks)
    want = loop.sample(
        models,
        prompts,
        masks,
        key,
        max_new_tokens=c.max_new_tokens,
        sampling=trainer.sampling,
        eos_ids=trainer.eos_ids,
        pad_id=trainer.train_data.pad_id,
        weights=weights,
    )
  trainer.checkpointer.close()
  trainer.writer.close()
  t = c.max_new_tokens
  tokens = np.asarray(batch["tokens"])
  np.testing.assert_array_equal(tokens[:, :-t], host["prompt"])
  np.testing.assert_array_equal(tokens[:, -t:], np.asarray(want.response))
  np.testing.assert_array_equal(
      np.asarray(batch["sampler_logprobs"]), np.asarray(want.logprobs)
  )
  teacher_tokens = np.asarray(batch[self_teacher.TEACHER_TOKENS])
  np.testing.assert_array_equal(teacher_tokens[:, :-t], host["teacher_prompt"])
  np.testing.assert_array_equal(teacher_tokens[:, -t:], tokens[:, -t:])


@pytest.mark.slow
def test_topd_trains_under_a_teacher_context(pair, tmp_path):
  # TOPD's stage scores and branches the teacher's own sequence (checked
  # part by part in tests/trainer/test_stage.py); here the whole run: the
  # stage, the step (its trajectory term along the teacher's windows) and
  # the token map of the run's method.
  c = testing.tiny_train_config(
      pair, method="topd", total_steps=2, teacher="self"
  )
  c.topd.window, c.topd.ot_quantile = 8, 0.5
  c.teacher_context.template = "solution"
  c.teacher_context.max_prompt_len = 64
  c.token_map_every = 2
  trainer = loop.Trainer(start_run(c), str(tmp_path / "run"))
  trainer.run()
  with open(os.path.join(tmp_path, "run", "metrics.jsonl")) as f:
    logged = [json.loads(l) for l in f if '"loss/total"' in l]
  assert [m["step"] for m in logged] == [1, 2]
  assert all(np.isfinite(m["loss/total"]) for m in logged)
  # Step 1: the student is still theta_0, the teacher's weights. Along the
  # same windows the two differ only by the teacher's prefix (its context),
  # so the trajectory term is > 0 only if the teacher saw its own.
  first = logged[0]
  assert first["topd/traj_rows"] > 0 and first["loss/traj"] > 1e-3, first
  page = os.path.join(tmp_path, "run", "plots", "token_map_000002.html")
  with open(page, encoding="utf-8") as f:
    text = f.read()
  assert "its own prompt (a teacher context)" in text
  assert '<option value="topd_false_alarm"' in text


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["live", "ema"])
def test_topd_stage_branches_with_the_step_teacher(pair, tmp_path, weights):
  # A live / EMA self-teacher: TOPD's stage scores and branches with the
  # state's weights (the params, or the EMA in the optimizer state), as
  # the step does, not with the loaded theta_0.
  c = testing.tiny_train_config(pair, method="topd", teacher="self")
  c.self_teacher.weights = weights
  c.topd.window, c.topd.ot_quantile = 8, 0.5
  trainer = loop.Trainer(start_run(c), str(tmp_path / "run"))
  theta_0 = trainer.state.params
  is_ema = lambda x: isinstance(x, self_teacher.EmaState)
  # As after some training: params and EMA away from theta_0 and apart.
  state = trainer.state.replace(
      params=jax.tree.map(lambda p: p * 1.5, trainer.state.params),
      opt_state=jax.tree.map(
          lambda x: (
              self_teacher.EmaState(jax.tree.map(lambda p: p * 0.7, x.ema))
              if is_ema(x)
              else x
          ),
          trainer.state.opt_state,
          is_leaf=is_ema,
      ),
  )
  trainer.state = state
  host = next(trainer.iterator)
  with jax.set_mesh(trainer.mesh):
    batch = jax.device_get(trainer._batch(0, host))  # pylint: disable=protected-access
    base = {k: batch[k] for k in ("tokens", "mask", "response_mask")}
    base["sampler_logprobs"] = batch["sampler_logprobs"]
    key = stage_lib.stage_key(c.seed, 0)
    teacher = (
        state.params
        if weights == "live"
        else self_teacher.ema_params(state.opt_state)
    )
    want = jax.device_get(trainer.prepare_fn(state.params, teacher, base, key))
    # theta_0 (the loaded teacher of weights='initial') gives other scores.
    other = jax.device_get(trainer.prepare_fn(state.params, theta_0, base, key))
  trainer.checkpointer.close()
  trainer.writer.close()
  for k, v in want.items():
    np.testing.assert_array_equal(batch[k], v, err_msg=k)
  assert not np.array_equal(
      batch[topd_stage.CAND_SCORE], other[topd_stage.CAND_SCORE]
  )
  if weights == "live":  # teacher = student, no context: nothing to learn
    np.testing.assert_allclose(batch[topd_stage.CAND_SCORE], 0.0, atol=1e-5)


def test_pointwise_clip_caps_each_token_and_its_gradient():
  from opd_jax import heads  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  hs, ht = (jnp.asarray(rng.normal(size=(2, 5, 4)), jnp.float32) for _ in "st")
  ws, wt = (jnp.asarray(rng.normal(size=(4, 9)) * 3, jnp.float32) for _ in "st")
  mask = jnp.ones((2, 5))
  per_token = heads.head_divergence(hs, ws, ht, wt, mask > 0)
  clip = float(np.median(per_token))

  def loss(h, clip):
    return heads.dense_divergence_loss(
        h, ws, ht, wt, mask, clip=clip, chunk_size=None
    ).value()

  np.testing.assert_allclose(
      loss(hs, clip), np.minimum(per_token, clip).mean(), rtol=1e-6
  )
  assert (
      loss(hs, 0.0)
      == heads.dense_divergence_loss(
          hs, ws, ht, wt, mask, chunk_size=None
      ).value()
  )
  grad = jax.grad(loss)(hs, clip)
  above = np.asarray(per_token > clip)
  assert above.any() and not np.asarray(grad)[above].any()
  assert np.asarray(grad)[~above].any()
