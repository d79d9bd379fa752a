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
"""The typed run config: one frozen dataclass per concern, each checking itself.

The command line and the `configs/*.py` files speak `ml_collections`
(`--config.optimizer.learning_rate=...`); `RunConfig.from_config_dict`
converts that ConfigDict once, where a run starts, and everything after it
reads these records. Each field names its place in the ConfigDict
(`key`), so that `default_config()` is generated from the fields'
defaults and every error names the flag a user sets (`config.batch_size`,
not the record's attribute).

Adding a run setting: a field (with its default and, if it is not
`<block prefix><name>`, its `key`) on the block of its concern, its check
in that block's `__post_init__`, its one consumer, a test.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, Mapping

import jax

from opd_jax import methods
from opd_jax.data import context as contexts
from opd_jax.data import tasks
from opd_jax.data.sources import SPLITS, TaskSource
from opd_jax.models import sequence_attention
from opd_jax.models import transformer
from opd_jax.models.config import PRESETS
from opd_jax.rollouts import Sampling

DTYPES = ("float32", "bfloat16")
DATA_SOURCES = (*tasks.NAMES, "file")
ROLLOUT_SOURCES = ("student", "teacher", "mixture")
OVERLONG = ("drop", "truncate")
SELF = "self"
SELF_WEIGHTS = ("initial", "live", "ema")
# Per-placeholder columns of a file source (config.data.<name>_field).
CONTEXT_FIELDS = ("solution", "summary", "wrong")
# Sizes and steps become int32 array shapes and counters.
INT_LIMIT = 2**31 - 1


class ConfigError(ValueError):
  """A config field holds a value outside its allowed range."""


def _at(default: Any, key: str) -> Any:
  """A field kept at `key` in the ConfigDict (not `<prefix><name>`)."""
  return dataclasses.field(default=default, metadata={"key": key})


def need(ok: bool, field: str, allowed: str, value) -> None:
  """Raises ConfigError `config.<field>: expected <allowed>, got <value>`."""
  if not ok:
    raise ConfigError(f"config.{field}: expected {allowed}, got {value!r}")


def need_int(value, field: str, low: int) -> None:
  """`value` is an int (not a bool) in [low, 2^31 - 1]."""
  need(
      isinstance(value, int) and not isinstance(value, bool) and value >= low,
      field,
      f"an integer >= {low}",
      value,
  )
  need(value <= INT_LIMIT, field, "an integer <= 2^31 - 1", value)


class Block:
  """A config block: its fields sit at `PREFIX + name` unless `key` says."""

  PREFIX: ClassVar[str] = ""

  @classmethod
  def keys(cls) -> dict[str, str]:
    """{attribute: dotted ConfigDict key} of the block's fields."""
    return {
        f.name: f.metadata.get("key", cls.PREFIX + f.name)
        for f in dataclasses.fields(cls)
    }

  @classmethod
  def from_config_dict(cls, c: Any):
    """The block read from ConfigDict (or nested dict) `c`; checked."""
    values = {}
    for name, key in cls.keys().items():
      node = c
      for part in key.split("."):
        node = node[part]
      values[name] = node
    return cls(**values)


def _check_checkpoint(role: str, path: str, preset: str) -> None:
  need(
      preset == "" or preset in PRESETS,
      f"{role}_preset",
      f"'' or one of {PRESETS}",
      preset,
  )
  need(
      bool(path or preset),
      role,
      f"an HF checkpoint directory (or set config.{role}_preset)",
      path,
  )


@dataclasses.dataclass(frozen=True)
class Models(Block):
  """The student's checkpoint and how both models run.

  Attributes:
    student: the student's HF checkpoint directory; '' builds
      `student_preset` with random weights (tests, benchmarks).
    student_preset: a `ModelConfig` preset name (random weights, or the
      shapes a dry run plans with when `student` is not on this machine).
    tokenizer: the tokenizer's directory ('' = the student's).
    dtype: parameter (master weight) dtype.
    compute_dtype: '' computes in `dtype`; 'bfloat16' runs rollouts and both
      trunks with bf16 operands (float32 accumulation, softmaxes and
      divergences): about 2x faster matmuls on CPU.
    attention: the full-sequence attention backend
      (models/sequence_attention.py: 'auto' is splash on TPU, cuDNN on GPU,
      on CPU dense up to 512 keys and blockwise flash beyond; or 'dense',
      'blockwise', 'cudnn', 'splash'). The one place it is kept:
      `execution(role)` hands it to the models.
    remat: the student's layer rematerialisation ('auto': on for
      accelerators and for sequences of 1024+ tokens on CPU; 'none',
      'full', 'dots', 'offload'); the teacher is never differentiated and
      runs without.
    micro_batches: the step runs both trunks over the batch's rows in this
      many groups, one group's activations live at a time; the heads, the
      selection and the loss still see the whole batch, so any value gives
      the same step. Raise it when `--dry_run` says the step does not fit.
    pad_student_vocab: give the student the teacher's larger (padded)
      vocabulary, new rows at the mean embedding (a student whose
      tokenizer has fewer padding rows than the teacher's).
    allow_tokenizer_mismatch: a teacher tokenizer that maps some id to
      another token only warns (same ids, other spellings).
  """

  student: str = ""
  student_preset: str = ""
  tokenizer: str = ""
  dtype: str = "float32"
  compute_dtype: str = ""
  attention: str = "auto"
  remat: str = "auto"
  micro_batches: int = 1
  pad_student_vocab: bool = False
  allow_tokenizer_mismatch: bool = False

  def __post_init__(self):
    for check, value in (
        (sequence_attention.check_implementation, self.attention),
        (transformer.check_remat, self.remat),
    ):
      try:
        check(value)
      except ValueError as e:
        raise ConfigError(f"config.{e}") from None
    need_int(self.micro_batches, "micro_batches", 1)
    need(self.dtype in DTYPES, "dtype", f"one of {DTYPES}", self.dtype)
    need(
        self.compute_dtype in ("",) + DTYPES,
        "compute_dtype",
        f"'' or one of {DTYPES}",
        self.compute_dtype,
    )
    _check_checkpoint("student", self.student, self.student_preset)

  def execution(self, role: str) -> dict[str, str]:
    """`role`'s execution settings (`Transformer.set_execution`)."""
    return dict(
        attention=self.attention,
        remat=self.remat if role == "student" else "none",
    )


@dataclasses.dataclass(frozen=True)
class Teacher(Block):
  """The teacher: a checkpoint, or the student itself, and its own prompt.

  Attributes:
    path: its HF checkpoint directory (`config.teacher`), or 'self': the
      student's model with the weights of `self_weights`.
    preset: as `Models.student_preset`, for the teacher.
    self_weights: with 'self', which of the student's weights teach:
      'initial' (frozen theta_0), 'live' (the current student under
      stop-gradient), 'ema' (an EMA of it kept in the optimizer state).
    ema_decay: the EMA's decay.
    template: the teacher's own prompt (self-distillation with privileged
      context, data/context.py): '' scores the student's sequence; a preset
      ('empty', 'solution', 'summary', 'correct_wrong') or a format string
      over {question} and the data's context fields.
    context_len: the teacher prompt's static width (0: the student's
      `max_prompt_len`).
    kl_clip: > 0 clips each token's divergence at this value (self-distillation's
      pointwise clip), through the method's loss pass.
  """

  path: str = _at("", "teacher")
  preset: str = _at("", "teacher_preset")
  self_weights: str = _at("initial", "self_teacher.weights")
  ema_decay: float = _at(0.99, "self_teacher.ema_decay")
  template: str = _at("", "teacher_context.template")
  context_len: int = _at(0, "teacher_context.max_prompt_len")
  kl_clip: float = _at(0.0, "teacher_context.kl_clip")

  def __post_init__(self):
    _check_checkpoint("teacher", self.path, self.preset)
    need(
        self.self_weights in SELF_WEIGHTS,
        "self_teacher.weights",
        f"one of {SELF_WEIGHTS}",
        self.self_weights,
    )
    if not 0.0 <= self.ema_decay < 1.0:
      raise ConfigError(
          "config.self_teacher.ema_decay: expected in [0, 1), got"
          f" {self.ema_decay!r}"
      )
    if self.is_self and self.preset:
      raise ConfigError(
          "config.teacher_preset: expected '' with config.teacher='self' (the"
          f" teacher is the student's own model), got {self.preset!r}"
      )
    if self.self_weights != "initial" and not self.is_self:
      raise ConfigError(
          f"config.self_teacher.weights: {self.self_weights!r} needs"
          " config.teacher='self', but a teacher is also given"
          f" (config.teacher={self.path!r}); drop one"
      )
    if not (isinstance(self.context_len, int) and self.context_len >= 0):
      raise ConfigError(
          "config.teacher_context.max_prompt_len: expected an integer >= 0"
          f" (0: config.max_prompt_len), got {self.context_len!r}"
      )
    if not self.kl_clip >= 0:
      raise ConfigError(
          f"config.teacher_context.kl_clip: expected >= 0, got {self.kl_clip!r}"
      )
    if self.template:
      try:
        contexts.resolve_template(self.template)
      except contexts.ContextError as e:
        raise ConfigError(str(e)) from None

  @property
  def is_self(self) -> bool:
    return self.path == SELF

  @property
  def step_weights(self) -> str:
    """'external' (parameters passed to the step), 'live' or 'ema'."""
    if self.is_self and self.self_weights in ("live", "ema"):
      return self.self_weights
    return "external"

  def context(self, max_prompt_len: int) -> contexts.TeacherContext | None:
    """The run's `TeacherContext`, or None (plain OPD)."""
    if not self.template:
      return None
    return contexts.TeacherContext(
        self.template, self.context_len or max_prompt_len
    )


@dataclasses.dataclass(frozen=True)
class Data(Block):
  """The prompts, their batch shape and the evaluation rows.

  Attributes:
    source: a built-in task ('arithmetic', 'countdown': data/tasks.py) or
      'file' (jsonl / parquet / save_to_disk directory at `path`,
      evaluation rows at `eval_path`).
    use_chat_template, system_prompt: prompts through the tokenizer's chat
      template (when it has one); 'default' leaves the template's own
      system turn, '' sends an empty one, other text is the turn.
    solution_field, summary_field, wrong_field: columns of a file source
      that a teacher-context template names as {solution}, {summary},
      {wrong} ('' = the data has none; the built-in tasks provide all).
    skip_ungradable: a file's evaluation rows whose answer no grader can
      use are dropped and counted in one line instead of refusing the run.
    eval_fraction: with a file source, no `eval_path` and `eval_every` > 0,
      the share of the file's distinct questions held out of training and
      evaluated on (`sources.hold_out`: a fixed seed, by question, the same
      rows in every run on the file); 0 trains on every row and never
      evaluates. A file without an answer column is trained on whole, with
      a warning.
    batch_size, max_prompt_len, max_new_tokens: the step's static shape
      [B, P + T].
    eval_examples: how many evaluation prompts each evaluation scores.
  """

  PREFIX: ClassVar[str] = "data."

  source: str = "arithmetic"
  path: str = ""
  eval_path: str = ""
  question_field: str = "question"
  answer_field: str = "answer"
  response_field: str = ""
  overlong: str = "drop"
  difficulty: str = "default"
  num_examples: int = 20000
  eval_split: str = "test"
  use_chat_template: bool = True
  system_prompt: str = "default"
  solution_field: str = ""
  summary_field: str = ""
  wrong_field: str = ""
  skip_ungradable: bool = False
  eval_fraction: float = 0.1
  batch_size: int = _at(8, "batch_size")
  max_prompt_len: int = _at(64, "max_prompt_len")
  max_new_tokens: int = _at(64, "max_new_tokens")
  eval_examples: int = _at(64, "eval_examples")

  def __post_init__(self):
    for name in ("batch_size", "max_prompt_len", "max_new_tokens"):
      need_int(getattr(self, name), name, 1)
    need_int(self.eval_examples, "eval_examples", 1)
    need(
        isinstance(self.eval_fraction, (int, float))
        and 0 <= self.eval_fraction < 1,
        "data.eval_fraction",
        "a fraction in [0, 1) (0: no held-out rows)",
        self.eval_fraction,
    )
    need(
        self.source in DATA_SOURCES,
        "data.source",
        f"one of {DATA_SOURCES}",
        self.source,
    )
    need(
        self.overlong in OVERLONG,
        "data.overlong",
        f"one of {OVERLONG}",
        self.overlong,
    )
    if self.is_task:
      levels = tasks.get(self.source).difficulties
      need(
          self.difficulty in levels,
          "data.difficulty",
          f"one of task {self.source!r}'s {levels}",
          self.difficulty,
      )
      need(
          self.eval_split in SPLITS,
          "data.eval_split",
          f"one of {SPLITS}",
          self.eval_split,
      )
      try:  # more problems than the split holds, or than anyone evaluates
        tasks.check_num_examples(
            self.source,
            self.difficulty,
            self.eval_split,
            self.eval_examples,
            field="config.eval_examples",
        )
      except ValueError as e:
        raise ConfigError(str(e)) from None
    else:
      need(bool(self.path), "data.path", "a local file or directory", self.path)
    tokens = self.batch_size * (self.max_prompt_len + self.max_new_tokens)
    need(
        tokens <= INT_LIMIT,
        "batch_size",
        "a batch of at most 2^31 - 1 tokens (batch_size x (max_prompt_len +"
        " max_new_tokens))",
        self.batch_size,
    )
    n = jax.process_count()
    need(
        self.batch_size % n == 0,
        "batch_size",
        f"a multiple of the number of processes ({n})",
        self.batch_size,
    )

  @property
  def is_task(self) -> bool:
    """A built-in task (else a file source)."""
    return self.source in tasks.NAMES

  @property
  def holds_out(self) -> bool:
    """A file source evaluated on held-out rows of `path`."""
    return not self.is_task and not self.eval_path and self.eval_fraction > 0

  @property
  def has_eval_rows(self) -> bool:
    return self.is_task or bool(self.eval_path) or self.holds_out

  @property
  def context_columns(self) -> dict[str, str]:
    """{placeholder: column} of a file source's context fields."""
    return {
        name: getattr(self, f"{name}_field")
        for name in CONTEXT_FIELDS
        if getattr(self, f"{name}_field")
    }

  @property
  def context_available(self) -> tuple[list[str], str]:
    """(the context fields a template may name, where they come from)."""
    if self.is_task:
      return (
          list(TaskSource.CONTEXT_FIELDS),
          f"the {self.source} task provides these",
      )
    return (
        list(self.context_columns) + (["answer"] if self.answer_field else []),
        "set config.data.<name>_field to the column that holds it",
    )


@dataclasses.dataclass(frozen=True)
class Rollouts(Block):
  """Which sequences a step trains on, and how they are sampled.

  Attributes:
    lmbda: the on-policy fraction: the share of steps trained on fresh
      rollouts (named `lmbda` as TRL's flag); the others train on the
      dataset's responses.
    rollout_source: who samples: the student (on-policy), the teacher
      (sequence-level KD) or their mixture, mixing `mixture_alpha` of the
      teacher.
    temperature, top_k, top_p: `rollouts.Sampling` (`sampling`).
  """

  lmbda: float = _at(1.0, "lmbda")
  rollout_source: str = _at("student", "rollout_source")
  mixture_alpha: float = _at(0.2, "mixture_alpha")
  temperature: float = _at(1.0, "sampling.temperature")
  top_k: int = _at(0, "sampling.top_k")
  top_p: float = _at(1.0, "sampling.top_p")

  def __post_init__(self):
    need_int(self.top_k, "sampling.top_k", 0)
    need(0.0 <= self.lmbda <= 1.0, "lmbda", "a fraction in [0, 1]", self.lmbda)
    need(
        self.rollout_source in ROLLOUT_SOURCES,
        "rollout_source",
        f"one of {ROLLOUT_SOURCES}",
        self.rollout_source,
    )
    need(
        0.0 <= self.mixture_alpha <= 1.0,
        "mixture_alpha",
        "a fraction in [0, 1]",
        self.mixture_alpha,
    )
    need(
        self.temperature >= 0,
        "sampling.temperature",
        ">= 0",
        self.temperature,
    )
    need(
        0.0 < self.top_p <= 1.0,
        "sampling.top_p",
        "a value in (0, 1]",
        self.top_p,
    )

  @property
  def sampling(self) -> Sampling:
    return Sampling(
        temperature=self.temperature, top_k=self.top_k, top_p=self.top_p
    )

  @property
  def mixture_weights(self) -> tuple[float, float]:
    """(student, teacher) weights of a mixture's tokens."""
    return (1 - self.mixture_alpha, self.mixture_alpha)


@dataclasses.dataclass(frozen=True)
class Optimizer(Block):
  """AdamW with warm-up and cosine decay over the run's `total_steps`."""

  PREFIX: ClassVar[str] = "optimizer."

  learning_rate: float = 1e-5
  warmup_steps: int = 0
  end_lr_fraction: float = 0.1
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  clip_norm: float = 1.0
  total_steps: int = _at(100, "total_steps")

  def __post_init__(self):
    need_int(self.total_steps, "total_steps", 1)
    need_int(self.warmup_steps, "optimizer.warmup_steps", 0)
    # A warm-up as long as the run never reaches the learning rate: the run
    # would train at a fraction of it (issue 38), so it is refused.
    need(
        self.warmup_steps < self.total_steps,
        "optimizer.warmup_steps",
        f"an integer < config.total_steps={self.total_steps} (the warm-up"
        " must end inside the run)",
        self.warmup_steps,
    )
    need(
        self.learning_rate > 0,
        "optimizer.learning_rate",
        "> 0",
        self.learning_rate,
    )
    for beta in ("b1", "b2"):
      need(
          0.0 <= getattr(self, beta) < 1.0,
          f"optimizer.{beta}",
          "a value in [0, 1)",
          getattr(self, beta),
      )
    need(
        self.clip_norm >= 0,
        "optimizer.clip_norm",
        ">= 0 (0 disables clipping)",
        self.clip_norm,
    )
    need(
        self.weight_decay >= 0,
        "optimizer.weight_decay",
        ">= 0",
        self.weight_decay,
    )
    need(
        0 <= self.end_lr_fraction <= 1,
        "optimizer.end_lr_fraction",
        "a fraction in [0, 1]",
        self.end_lr_fraction,
    )

  def schedule_args(self) -> dict[str, Any]:
    """`state.learning_rate_schedule`'s arguments."""
    return dict(
        learning_rate=self.learning_rate,
        total_steps=self.total_steps,
        warmup_steps=self.warmup_steps,
        end_lr_fraction=self.end_lr_fraction,
    )

  def optimizer_args(self) -> dict[str, Any]:
    """`state.make_optimizer`'s arguments."""
    return dict(
        **self.schedule_args(),
        weight_decay=self.weight_decay,
        b1=self.b1,
        b2=self.b2,
        clip_norm=self.clip_norm,
    )


@dataclasses.dataclass(frozen=True)
class Logging(Block):
  """Checkpoints, evaluations, metrics, token maps, the non-finite guard.

  Attributes:
    eval_every: steps between evaluations (0 disables them).
    token_map_every: steps between HTML token maps of the step's rollouts
      in WORKDIR/plots (0: never; see scripts/token_map.py).
    max_consecutive_skips: non-finite steps in a row that stop the run.
  """

  checkpoint_every: int = _at(50, "checkpoint_every")
  keep_checkpoints: int = _at(3, "keep_checkpoints")
  async_checkpointing: bool = _at(True, "async_checkpointing")
  eval_every: int = _at(50, "eval_every")
  log_every: int = _at(1, "log_every")
  token_map_every: int = _at(0, "token_map_every")
  max_consecutive_skips: int = _at(5, "max_consecutive_skips")

  def __post_init__(self):
    for name, low in (
        ("checkpoint_every", 1),
        ("keep_checkpoints", 1),
        ("eval_every", 0),
        ("log_every", 1),
        ("max_consecutive_skips", 1),
        ("token_map_every", 0),
    ):
      need_int(getattr(self, name), name, low)


@dataclasses.dataclass(frozen=True)
class Mesh(Block):
  """Mesh axis sizes (-1: all remaining devices) over the first
  `num_devices` devices (0: all)."""

  PREFIX: ClassVar[str] = "mesh."

  data: int = 1
  fsdp: int = -1
  tensor: int = 1
  num_devices: int = 0

  def __post_init__(self):
    need_int(self.num_devices, "mesh.num_devices", 0)


BLOCKS = {
    "models": Models,
    "teacher": Teacher,
    "data": Data,
    "rollouts": Rollouts,
    "optimizer": Optimizer,
    "logging": Logging,
    "mesh": Mesh,
}


def method_from_config_dict(c: Any) -> methods.Method:
  """The run's method: `config.<config.method>` built (its fields checked).

  Raises:
    ConfigError: an unknown `config.method`.
    ValueError: a bad method field, naming `config.<method>.<field>`.
  """
  if c["method"] not in methods.REGISTRY:
    raise ConfigError(
        f"config.method: expected one of {sorted(methods.REGISTRY)}, got"
        f" {c['method']!r}"
    )
  block = c[c["method"]]
  return methods.build_method(
      c["method"], block.to_dict() if hasattr(block, "to_dict") else block
  )


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """A run's settings, checked: the blocks, the seed and the built method.

  Attributes:
    seed: the run's root seed (data order, rollouts, initialisation).
    method_name: `config.method`.
    method: the method built from `config.<method_name>`.
    models, teacher, data, rollouts, optimizer, logging, mesh: the blocks.
    record: the ConfigDict as a nested dict: what `config.json` keeps (the
      other methods' blocks too), for the workdir's comparison and the
      hparams; no setting is read from it.
  """

  seed: int
  method_name: str
  method: methods.Method
  models: Models
  teacher: Teacher
  data: Data
  rollouts: Rollouts
  optimizer: Optimizer
  logging: Logging
  mesh: Mesh
  record: Mapping[str, Any] = dataclasses.field(
      default_factory=dict, compare=False, repr=False
  )

  def __post_init__(self):
    need_int(self.seed, "seed", 0)
    d, r, m = self.data, self.rollouts, self.models
    if r.lmbda < 1.0:
      need(
          d.is_task or bool(d.response_field),
          "data.response_field",
          "a field with reference responses when lmbda < 1",
          "",
      )
    need(
        d.batch_size % m.micro_batches == 0,
        "micro_batches",
        f"a divisor of batch_size ({d.batch_size})",
        m.micro_batches,
    )
    # The sampler's log-probs stand for the student's own only on the
    # student's rollouts; dataset responses and teacher samples have none.
    if getattr(self.method, "use_sampler_logprobs", False):
      need(
          r.lmbda == 1.0 and r.rollout_source == "student",
          f"{self.method_name}.use_sampler_logprobs",
          "False unless lmbda == 1 and rollout_source == 'student'",
          True,
      )
    t = self.teacher
    if t.kl_clip > 0 and not methods.has_loss_pass(self.method):
      clippable = sorted(
          name
          for name, cls in methods.REGISTRY.items()
          if methods.has_loss_pass(cls())
      )
      raise ConfigError(
          "config.teacher_context.kl_clip: the pointwise clip applies to the"
          f" methods whose loss goes through a loss pass ({clippable}), not"
          f" to {self.method_name!r}; set it to 0"
      )
    if t.template:
      available, hint = d.context_available
      try:
        contexts.check_available(t.template, available, hint)
      except contexts.ContextError as e:
        raise ConfigError(str(e)) from None

  @classmethod
  def from_config_dict(cls, c: Any) -> RunConfig:
    """Converts (and checks) a trainer ConfigDict: the one boundary.

    Raises:
      ConfigError / ValueError: one line naming the `config.*` field.
    """
    blocks = {name: b.from_config_dict(c) for name, b in BLOCKS.items()}
    return cls(
        seed=c["seed"],
        method_name=c["method"],
        method=method_from_config_dict(c),
        # In the ConfigDict's field order: config.json reads as the file.
        record=json.loads(c.to_json_best_effort()),
        **blocks,
    )

  def to_dict(self) -> dict[str, Any]:
    """The ConfigDict this was converted from, as a nested dict (sorted,
    as `ConfigDict.to_dict`)."""
    return _copy(self.record, sort=True)

  def to_json(self, indent: int = 2) -> str:
    """The ConfigDict this was converted from as JSON (`config.json`)."""
    return json.dumps(self.record, indent=indent)

  def checkpoint(self, role: str) -> tuple[str, str]:
    """(checkpoint directory, preset) of 'student' or 'teacher'."""
    if role == "student":
      return self.models.student, self.models.student_preset
    return self.teacher.path, self.teacher.preset

  @property
  def teacher_context(self) -> contexts.TeacherContext | None:
    """The teacher's own prompt (`Teacher.context`), or None."""
    return self.teacher.context(self.data.max_prompt_len)

  @property
  def total_steps(self) -> int:
    return self.optimizer.total_steps


def _copy(node, sort: bool):
  if isinstance(node, Mapping):
    keys = sorted(node) if sort else node
    return {k: _copy(node[k], sort) for k in keys}
  return node


def default_blocks() -> dict[str, Any]:
  """{dotted ConfigDict key: default} of every block's fields."""
  out = {"seed": 0}
  for block in BLOCKS.values():
    defaults = {f.name: f.default for f in dataclasses.fields(block)}
    for name, key in block.keys().items():
      out[key] = defaults[name]
  return out
