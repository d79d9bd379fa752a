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
"""The trainer's configuration: defaults for every field, and validation.

Config files in `configs/` start from `default_config()` and change what
their recipe needs; `validate()` runs after absl has applied the
`--config.field=value` overrides, and names the field and allowed values of
anything wrong.
"""

from __future__ import annotations

import dataclasses
import difflib

import jax
import ml_collections

from opd_jax import cli
from opd_jax import methods
from opd_jax.data import tasks
from opd_jax.models import sequence_attention
from opd_jax.models import transformer
from opd_jax.models.config import PRESETS

DTYPES = ("float32", "bfloat16")
DATA_SOURCES = (*tasks.NAMES, "file")
ROLLOUT_SOURCES = ("student", "teacher", "mixture")
OVERLONG = ("drop", "truncate")


def method_defaults(name: str) -> ml_collections.ConfigDict:
  """A config block holding every field of method `name` at its default."""
  cls = methods.REGISTRY[name]
  out = {}
  for f in dataclasses.fields(cls):
    if f.default is not dataclasses.MISSING:
      value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore
      value = f.default_factory()  # type: ignore
    else:
      continue
    # A nested settings record (`loss_pass`) is a nested block.
    out[f.name] = (
        dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    )
  return ml_collections.ConfigDict(out)


def default_config() -> ml_collections.ConfigDict:
  """Every trainer field with its default (a small CPU-sized run)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Models: HF checkpoint directories. With both paths empty, the presets
  # are built with random weights (tests, benchmarks); a checkpoint beside
  # an empty path is refused (a forgotten teacher would be random).
  # `--dry_run` plans with the preset's shapes, with a warning, when a
  # directory is not on this machine.
  c.student = ""
  c.teacher = ""
  c.student_preset = ""
  c.teacher_preset = ""
  c.tokenizer = ""  # default: the student's directory
  c.dtype = "float32"
  # '' computes in `dtype`; 'bfloat16' runs rollouts and both trunks with
  # bf16 operands (float32 accumulation, softmaxes and divergences; float32
  # master weights and optimizer state): about 2x faster matmuls on CPU.
  c.compute_dtype = ""
  # How the trunks run long sequences (models/sequence_attention.py,
  # ModelConfig.remat): the full-sequence attention backend ('auto': splash
  # on TPU, cuDNN on GPU, on CPU dense scores up to 512 keys and blockwise
  # flash attention beyond; or 'dense', 'blockwise', 'cudnn', 'splash') and
  # the student's layer rematerialisation ('auto': on for accelerators and
  # for sequences of 1024+ tokens on CPU; 'none', 'full', 'dots', 'offload').
  c.attention = "auto"
  c.remat = "auto"
  # The step runs both trunks over the batch's rows in this many groups of
  # batch_size / micro_batches rows, one group's activations live at a
  # time (the student's backward recomputes one group's forward at a time);
  # the heads, the selection and the loss still see the whole batch, so
  # any value gives the same step. Raise it when `--dry_run` says the step
  # does not fit (each group must split over the data-parallel devices).
  c.micro_batches = 1
  # Give the student the teacher's larger (padded) vocabulary, new rows at
  # the mean embedding, as TSD-KD does for Qwen2.5-1.5B under 14B.
  c.pad_student_vocab = False
  # The teacher's tokenizer (when its directory has one) must map every id
  # to the student's token; True only warns (same ids, other spellings).
  c.allow_tokenizer_mismatch = False

  c.method = "tip"
  for name in sorted(methods.REGISTRY):
    c[name] = method_defaults(name)

  c.total_steps = 100
  c.batch_size = 8
  c.max_prompt_len = 64
  c.max_new_tokens = 64
  # Fraction of steps trained on fresh rollouts (GKD's lambda); the others
  # train on the dataset's reference responses.
  c.lmbda = 1.0
  # Who samples the rollouts: the student (on-policy), the teacher
  # (sequence-level KD) or their mixture (MiniLLM), mixing `mixture_alpha`
  # of the teacher.
  c.rollout_source = "student"
  c.mixture_alpha = 0.2
  c.sampling = ml_collections.ConfigDict(
      dict(temperature=1.0, top_k=0, top_p=1.0)
  )

  c.optimizer = ml_collections.ConfigDict(
      dict(
          learning_rate=1e-5,
          warmup_steps=0,
          end_lr_fraction=0.1,
          weight_decay=0.0,
          b1=0.9,
          b2=0.999,
          clip_norm=1.0,
      )
  )

  c.data = ml_collections.ConfigDict(
      dict(
          # A built-in task ('arithmetic', 'countdown': data/tasks.py) or
          # 'file' (jsonl / parquet / save_to_disk directory at `path`,
          # evaluation rows at `eval_path`).
          source="arithmetic",
          path="",
          eval_path="",
          question_field="question",
          answer_field="answer",
          response_field="",
          overlong="drop",
          difficulty="default",
          num_examples=20000,
          eval_split="test",
          # Prompts through the tokenizer's chat template (when it has one);
          # system_prompt: 'default' leaves the template's own default, ''
          # sends an empty system turn (no default), other text is the turn.
          use_chat_template=True,
          system_prompt="default",
          # Columns of a file source that a teacher context template names
          # as {solution}, {summary}, {wrong} ('' = the data has none; the
          # arithmetic task provides all three).
          solution_field="",
          summary_field="",
          wrong_field="",
          # Evaluation rows of a file whose answer no grader can use are
          # dropped and counted in one line, instead of refusing the run.
          skip_ungradable=False,
      )
  )
  # The teacher's own prompt (self-distillation with privileged context,
  # opd_jax/data/context.py): '' scores the student's sequence (plain OPD);
  # a preset ('empty', 'solution', 'summary', 'correct_wrong') or a format
  # string over {question} and the data's context fields. max_prompt_len is
  # its static width (0: config.max_prompt_len); kl_clip > 0 clips each
  # token's divergence at that value (OPSD's pointwise clip).
  c.teacher_context = ml_collections.ConfigDict(
      dict(template="", max_prompt_len=0, kl_clip=0.0)
  )
  # With config.teacher='self': which of the student's weights teach
  # ('initial' = frozen theta_0, 'live' = the current student under
  # stop-gradient, 'ema' = an EMA of it kept in the train state).
  c.self_teacher = ml_collections.ConfigDict(
      dict(weights="initial", ema_decay=0.99)
  )

  c.checkpoint_every = 50
  c.keep_checkpoints = 3
  c.async_checkpointing = True
  c.eval_every = 50  # 0 disables periodic evaluation
  c.eval_examples = 64
  c.log_every = 1
  # Write an HTML token map of the step's rollouts to WORKDIR/plots every
  # this many steps (0: never); see scripts/token_map.py.
  c.token_map_every = 0
  c.max_consecutive_skips = 5
  # Mesh axis sizes (-1: all remaining devices); num_devices > 0 restricts
  # the mesh to the first devices (0: all).
  c.mesh = ml_collections.ConfigDict(
      dict(data=1, fsdp=-1, tensor=1, num_devices=0)
  )
  return c


class ConfigError(ValueError):
  """A config field holds a value outside its allowed range."""


# The loss-pass fields (`methods.LossPass`) moved into each divergence
# method's `loss_pass` block; GKD's (and rkl's) took TRL's names for two.
_LOSS_PASS_METHODS = ("gkd", "rkl", "tip", "dear", "topd")
_LOSS_PASS_FIELDS = (
    "divergence",
    "jsd_beta",
    "skew_alpha",
    "temperature",
    "reduction",
    "chunk_size",
)
_GKD_NAMES = {"beta": "jsd_beta", "loss_temperature": "temperature"}

# Fields renamed since runs were first saved: old dotted name -> new one.
# `restore.with_defaults` reads saved configs under the new names, and a
# config file or flag still using an old one is told the new one.
_SCORE_RENAMES = {
    "tip.tip_divergence": "tip.score_divergence",
    "dear.delta": "dear.score_divergence",
    "topd.candidate_divergence": "topd.score_divergence",
}
RENAMED_FIELDS = {
    **_SCORE_RENAMES,
    **{
        f"{m}.{f}": f"{m}.loss_pass.{f}"
        for m in _LOSS_PASS_METHODS
        for f in _LOSS_PASS_FIELDS
        if not (m in ("gkd", "rkl") and f in ("jsd_beta", "temperature"))
    },
    **{
        f"{m}.{old}": f"{m}.loss_pass.{new}"
        for m in ("gkd", "rkl")
        for old, new in _GKD_NAMES.items()
    },
}
# The renamed score fields took short names; today they take the names
# `divergence` takes.
_OLD_SCORE_VALUES = {"rkl": "reverse_kl", "fkl": "forward_kl"}


def migrate_saved(saved: dict) -> dict:
  """A saved run config (a dict) with today's field names and values.

  Only `RENAMED_FIELDS` move (into nested blocks where the new name is
  deeper); everything else is returned as saved (a new dict: `saved` is not
  changed).

  Examples:
    >>> migrate_saved({"gkd": {"beta": 0.3, "loss_temperature": 1.0}})
    {'gkd': {'loss_pass': {'jsd_beta': 0.3, 'temperature': 1.0}}}
  """

  def copy(node):
    if isinstance(node, dict):
      return {k: copy(v) for k, v in node.items()}
    return node

  out = copy(saved)
  for old, new in RENAMED_FIELDS.items():
    *old_path, old_key = old.split(".")
    node = out
    for part in old_path:
      node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or old_key not in node:
      continue
    value = node.pop(old_key)
    *new_path, new_key = new.split(".")
    node = out
    for part in new_path:
      node = node.setdefault(part, {})
    if old in _SCORE_RENAMES:
      value = _OLD_SCORE_VALUES.get(value, value)
    node.setdefault(new_key, value)
  return out


def unknown_fields(
    c: ml_collections.ConfigDict, reference: ml_collections.ConfigDict
) -> list[tuple[str, str | None]]:
  """(field, closest known name or None) for each field `reference` lacks.

  Nested blocks are compared field by field (`sampling.temprature`).
  """
  out = []

  def walk(node, ref, prefix):
    for key in node.keys():
      name = f"{prefix}{key}"
      if key not in ref:
        near = difflib.get_close_matches(key, list(ref.keys()), n=1)
        out.append((name, f"{prefix}{near[0]}" if near else None))
      elif isinstance(ref[key], ml_collections.ConfigDict) and isinstance(
          node[key], ml_collections.ConfigDict
      ):
        walk(node[key], ref[key], name + ".")

  walk(c, reference, "")
  return out


def missing_fields(
    c: ml_collections.ConfigDict, reference: ml_collections.ConfigDict
) -> list[str]:
  """The fields (and blocks) of `reference` that `c` lacks, dotted."""
  out = []

  def walk(node, ref, prefix):
    for key in ref.keys():
      if key not in node:
        out.append(f"{prefix}{key}")
      elif isinstance(ref[key], ml_collections.ConfigDict) and isinstance(
          node[key], ml_collections.ConfigDict
      ):
        walk(node[key], ref[key], f"{prefix}{key}.")

  walk(c, reference, "")
  return out


def check_fields(c: ml_collections.ConfigDict) -> None:
  """Refuses fields `default_config()` does not have (a misspelled name),
  and fields or blocks it has that `c` lacks.

  A config file may set any attribute (`c.optimiser = ...`); such a field
  would be accepted, saved and have no effect. Raises ConfigError naming the
  first unknown field and the closest known one.
  """
  reference = default_config()
  missing = missing_fields(c, reference)
  if missing:
    raise ConfigError(
        f"config.{missing[0]}: missing (the config file deleted or replaced"
        " it); start from default_config() and change fields, not blocks"
    )
  unknown = unknown_fields(c, reference)
  if unknown:
    name, near = unknown[0]
    hint = f"; did you mean config.{near}?" if near else ""
    if name in RENAMED_FIELDS:
      hint = f"; it is config.{RENAMED_FIELDS[name]} now"
    more = (
        f" (also: {', '.join('config.' + n for n, _ in unknown[1:4])})"
        if len(unknown) > 1
        else ""
    )
    raise ConfigError(f"config.{name}: no such field{hint}{more}")


def _need(ok: bool, field: str, allowed: str, value) -> None:
  if not ok:
    raise ConfigError(f"config.{field}: expected {allowed}, got {value!r}")


# Sizes and steps become int32 array shapes and counters.
_INT_LIMIT = 2**31 - 1


def _int_at_least(c, field: str, low: int) -> None:
  value = c
  for part in field.split("."):
    value = value[part]
  _need(
      isinstance(value, int) and not isinstance(value, bool) and value >= low,
      field,
      f"an integer >= {low}",
      value,
  )
  _need(value <= _INT_LIMIT, field, "an integer <= 2^31 - 1", value)


def _check_execution(c: ml_collections.ConfigDict) -> None:
  """`attention` and `remat` name settings this platform can run."""
  for check, value in (
      (sequence_attention.check_implementation, c.attention),
      (transformer.check_remat, c.remat),
  ):
    try:
      check(value)
    except ValueError as e:
      raise ConfigError(f"config.{e}") from None


def run_method(c: ml_collections.ConfigDict) -> methods.Method:
  """The run's method: `config.<config.method>` built (its fields checked).

  Raises:
    ConfigError: an unknown `config.method`.
    ValueError: a bad method field, naming `config.<method>.<field>`.
  """
  if c.method not in methods.REGISTRY:
    raise ConfigError(
        f"config.method: expected one of {sorted(methods.REGISTRY)}, got"
        f" {c.method!r}"
    )
  return methods.build_method(c.method, c[c.method].to_dict())


# Fields read only from a file source (`data.source='file'`): with a
# built-in task they would be ignored.
FILE_ONLY_FIELDS = (
    "path",
    "eval_path",
    "question_field",
    "answer_field",
    "response_field",
    "solution_field",
    "summary_field",
    "wrong_field",
    "skip_ungradable",
)


def _flat_fields(node: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in node.items():
    if isinstance(value, dict):
      out.update(_flat_fields(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def inactive_method_fields(c: ml_collections.ConfigDict) -> list[str]:
  """Fields of methods other than `config.method` set away from defaults.

  `config.tip.rho=0.2` under `config.method='rkl'` is such a field: the run
  never reads it. Returns dotted names (`tip.rho`).
  """
  out = []
  for name in sorted(methods.REGISTRY):
    if name == c.method or name not in c:
      continue
    default = _flat_fields(method_defaults(name).to_dict())
    for field, value in _flat_fields(c[name].to_dict()).items():
      if field in default and value != default[field]:
        out.append(f"{name}.{field}")
  return out


def check_active(
    c: ml_collections.ConfigDict, *, overridden: tuple[str, ...] = ()
) -> None:
  """Refuses settings that cannot act in this run (one line each).

  Called where a run starts (the trainer, the dry run), after `validate`:
  a saved run's config is not re-judged when it is only restored.

  - a model built from a preset (random weights) beside a checkpoint of the
    other role: a forgotten `config.teacher` (or student) would otherwise
    train against a random model;
  - a file source's field (`data.path`, `data.eval_path`, the column names)
    with a built-in task, which would train and evaluate on the task;
  - a field of another method than `config.method`: refused when the
    command line set it (`overridden`: dotted names, `tip.rho`), warned
    once when the config file did (switching a config's method is a
    documented use);
  - warned once: a file source without evaluation rows (the run will not
    evaluate), and a warm-up as long as the run (the rate never peaks).

  Raises:
    ConfigError: naming the field, expected vs got.
  """
  for role, other in (("teacher", "student"), ("student", "teacher")):
    if c[other] and not c[role] and c[other] != "self":
      preset = c[f"{role}_preset"]
      random = (
          f"; config.{role}_preset={preset!r} alone would be a {role} with"
          " random weights"
          if preset
          else ""
      )
      also = " (or 'self')" if role == "teacher" else ""
      raise ConfigError(
          f"config.{role}: expected an HF checkpoint directory{also} beside"
          f" config.{other}={c[other]!r}, got ''{random}"
      )
  d = c.data
  if d.source in tasks.NAMES:
    defaults = default_config().data
    for field in FILE_ONLY_FIELDS:
      if d[field] != defaults[field]:
        raise ConfigError(
            f"config.data.{field}: expected {defaults[field]!r} with the"
            f" built-in task config.data.source={d.source!r} (which trains"
            " and evaluates on its own problems), got"
            f" {d[field]!r}; set config.data.source='file' to use a file"
        )
  for field in inactive_method_fields(c):
    message = (
        f"config.{field}: a field of method {field.split('.')[0]!r}, but"
        f" config.method is {c.method!r}: it has no effect in this run"
    )
    if field in overridden:
      raise ConfigError(
          f"--{message}; drop it or set --config.method={field.split('.')[0]}"
      )
    cli.warn(message)
  if d.source == "file" and not d.eval_path and c.eval_every:
    cli.warn(
        "config.data.eval_path is '': this run will not evaluate"
        f" (config.eval_every={c.eval_every} has nothing to score); give a"
        " file with answers to evaluate on"
    )
  warmup = c.optimizer.warmup_steps
  if warmup and warmup >= c.total_steps:
    cli.warn(
        f"config.optimizer.warmup_steps={warmup} >= config.total_steps="
        f"{c.total_steps}: the learning rate never reaches"
        f" config.optimizer.learning_rate={c.optimizer.learning_rate}"
    )


def validate(c: ml_collections.ConfigDict) -> methods.Method:
  """Checks every field's range; raises ConfigError naming the field.

  Returns:
    The run's method (`run_method`), built once here so that a bad method
    field is reported with the others; `plan_run` keeps it.
  """
  _check_execution(c)
  for field, low in [
      ("total_steps", 1),
      ("batch_size", 1),
      ("micro_batches", 1),
      ("max_prompt_len", 1),
      ("max_new_tokens", 1),
      ("checkpoint_every", 1),
      ("keep_checkpoints", 1),
      ("eval_every", 0),
      ("eval_examples", 1),
      ("log_every", 1),
      ("max_consecutive_skips", 1),
      ("token_map_every", 0),
      ("optimizer.warmup_steps", 0),
      ("sampling.top_k", 0),
      ("mesh.num_devices", 0),
  ]:
    _int_at_least(c, field, low)
  _need(c.dtype in DTYPES, "dtype", f"one of {DTYPES}", c.dtype)
  _need(
      c.compute_dtype in ("",) + DTYPES,
      "compute_dtype",
      f"'' or one of {DTYPES}",
      c.compute_dtype,
  )
  _need(0.0 <= c.lmbda <= 1.0, "lmbda", "a fraction in [0, 1]", c.lmbda)
  _need(
      c.rollout_source in ROLLOUT_SOURCES,
      "rollout_source",
      f"one of {ROLLOUT_SOURCES}",
      c.rollout_source,
  )
  _need(
      0.0 <= c.mixture_alpha <= 1.0,
      "mixture_alpha",
      "a fraction in [0, 1]",
      c.mixture_alpha,
  )
  _need(
      c.sampling.temperature >= 0,
      "sampling.temperature",
      ">= 0",
      c.sampling.temperature,
  )
  _need(
      0.0 < c.sampling.top_p <= 1.0,
      "sampling.top_p",
      "a value in (0, 1]",
      c.sampling.top_p,
  )
  _int_at_least(c, "seed", 0)
  _need(
      c.optimizer.learning_rate > 0,
      "optimizer.learning_rate",
      "> 0",
      c.optimizer.learning_rate,
  )
  for beta in ("b1", "b2"):
    _need(
        0.0 <= c.optimizer[beta] < 1.0,
        f"optimizer.{beta}",
        "a value in [0, 1)",
        c.optimizer[beta],
    )
  _need(
      c.optimizer.clip_norm >= 0,
      "optimizer.clip_norm",
      ">= 0 (0 disables clipping)",
      c.optimizer.clip_norm,
  )
  _need(
      c.optimizer.weight_decay >= 0,
      "optimizer.weight_decay",
      ">= 0",
      c.optimizer.weight_decay,
  )
  _need(
      0 <= c.optimizer.end_lr_fraction <= 1,
      "optimizer.end_lr_fraction",
      "a fraction in [0, 1]",
      c.optimizer.end_lr_fraction,
  )
  _need(
      c.data.source in DATA_SOURCES,
      "data.source",
      f"one of {DATA_SOURCES}",
      c.data.source,
  )
  _need(
      c.data.overlong in OVERLONG,
      "data.overlong",
      f"one of {OVERLONG}",
      c.data.overlong,
  )
  if c.data.source in tasks.NAMES:
    levels = tasks.get(c.data.source).difficulties
    _need(
        c.data.difficulty in levels,
        "data.difficulty",
        f"one of task {c.data.source!r}'s {levels}",
        c.data.difficulty,
    )

  else:
    _need(
        bool(c.data.path), "data.path", "a local file or directory", c.data.path
    )
  for role in ("student", "teacher"):
    preset = c[f"{role}_preset"]
    _need(
        preset == "" or preset in PRESETS,
        f"{role}_preset",
        f"'' or one of {PRESETS}",
        preset,
    )
    _need(
        bool(c[role] or preset),
        role,
        f"an HF checkpoint directory (or set config.{role}_preset)",
        c[role],
    )
  if c.lmbda < 1.0:
    _need(
        c.data.source in tasks.NAMES or bool(c.data.response_field),
        "data.response_field",
        "a field with reference responses when lmbda < 1",
        "",
    )
  tokens = c.batch_size * (c.max_prompt_len + c.max_new_tokens)
  _need(
      tokens <= _INT_LIMIT,
      "batch_size",
      "a batch of at most 2^31 - 1 tokens (batch_size x (max_prompt_len +"
      " max_new_tokens))",
      c.batch_size,
  )
  _need(
      c.batch_size % c.micro_batches == 0,
      "micro_batches",
      f"a divisor of batch_size ({c.batch_size})",
      c.micro_batches,
  )
  n = jax.process_count()
  _need(
      c.batch_size % n == 0,
      "batch_size",
      f"a multiple of the number of processes ({n})",
      c.batch_size,
  )
  method = run_method(c)
  # The sampler's log-probs stand for the student's own only on the
  # student's rollouts; dataset responses and teacher samples have none.
  if getattr(method, "use_sampler_logprobs", False):
    _need(
        c.lmbda == 1.0 and c.rollout_source == "student",
        f"{c.method}.use_sampler_logprobs",
        "False unless lmbda == 1 and rollout_source == 'student'",
        True,
    )
  return method
