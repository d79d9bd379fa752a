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
r"""Trains the demo's teacher (or the student's warm-up) by SFT on the task.

  # the teacher shipped in assets/demo/teacher (~5-10 min on 2 CPU cores)
  python scripts/train_teacher.py --role=teacher --out=assets/demo/teacher
  # the student's starting point shipped in assets/demo/student_init
  python scripts/train_teacher.py --role=student --out=assets/demo/student_init
  # the countdown pair (a 6x capacity gap; data/countdown.py)
  python scripts/train_teacher.py --task=countdown --role=teacher \
      --out=assets/countdown/teacher
  python scripts/train_teacher.py --task=countdown --role=student \
      --out=assets/countdown/student_init

Both start from a randomly initialised Qwen3-style decoder over the task's
word-level tokenizer and minimise cross-entropy on the worked rationales of
the task's train split (`opd_jax.trainer.sft`). The student role
sees only a few examples for a few steps: it learns the answer format but
not the arithmetic, which is what on-policy distillation then teaches it.
A quarter of the student's SFT prompts carry the worked solution before the
question (`--context_fraction`, the `solution` template of
`opd_jax/data/context.py`), so that it can use an in-context demonstration:
its own weights with the solution in context are the self-teacher of
self-distillation (docs/self_distillation.md).
The result is a pure function of the flags (seeded init and shuffling).
At the end the script prints greedy accuracy on held-out (test) problems
(`--eval_every` also prints it during training, on 64 of them).
Long runs checkpoint into `--checkpoint_dir` (default `OUT.checkpoints/`)
every `--checkpoint_every` steps; the same command run again resumes from
the newest checkpoint and ends where an uninterrupted run ends. The
directory is removed once the model is written.
A model already in --out is kept: it moves to OUT.previous-<time>/ first.
Mistakes print one `error:` line and exit with code 2.
"""

import json
import os
import shutil
import time

from absl import flags
import jax
import jax.numpy as jnp
from flax import nnx

from opd_jax import cli
from opd_jax.cli import InputError
from opd_jax.data import context as contexts
from opd_jax.data import countdown
from opd_jax.data import tasks
from opd_jax.data.dataset import PromptDataset
from opd_jax.data.sources import TaskSource
from opd_jax.data import tokenizer as task_tokenizer
from opd_jax.evaluation import evaluate as evaluation
from opd_jax.evaluation.graders import TaskGrader
from opd_jax.models import ModelConfig, Transformer, save_hf
from opd_jax.trainer import sft

# Per task and role: model shape and SFT schedule. On arithmetic the teacher
# must solve the task and the student shares its shape (so OPD, not
# capacity, limits it) but only gets a short warm-up on a few examples. On
# countdown the teacher has 5x the student's parameters (the papers'
# capacity gap) and the student a longer warm-up, so that it starts far
# from zero as the papers' students do.
ARITHMETIC_ROLES = {
    "teacher": dict(
        num_layers=4,
        embed_dim=128,
        num_heads=4,
        mlp_dim=384,
        num_steps=600,
        num_examples=20_000,
        batch_size=64,
        learning_rate=3e-3,
        seed=1,
        context_fraction=0.0,
        length_groups=0,
    ),
    "student": dict(
        num_layers=4,
        embed_dim=128,
        num_heads=4,
        mlp_dim=384,
        num_steps=150,
        num_examples=256,
        batch_size=32,
        learning_rate=3e-3,
        seed=2,
        # A quarter of its prompts carry the worked solution before the
        # question: it learns to use one (its self-teacher), not to solve
        # bare ones. Half slowed the demo's distillation (0.30 after 300
        # steps, against 0.72 at a quarter).
        context_fraction=0.25,
        length_groups=0,
    ),
}
COUNTDOWN_ROLES = {
    "teacher": dict(
        num_layers=5,
        embed_dim=256,
        num_heads=4,
        mlp_dim=768,
        num_steps=4000,
        num_examples=48_000,
        batch_size=32,
        learning_rate=1e-3,
        seed=1,
        context_fraction=0.0,
        length_groups=16,
    ),
    "student": dict(
        num_layers=4,
        embed_dim=128,
        num_heads=4,
        mlp_dim=384,
        num_steps=300,
        num_examples=4_000,
        batch_size=32,
        learning_rate=2e-3,
        seed=2,
        context_fraction=0.25,
        length_groups=16,
    ),
}
ROLES = {"arithmetic": ARITHMETIC_ROLES, "countdown": COUNTDOWN_ROLES}

_TASK = flags.DEFINE_enum(
    "task", "arithmetic", sorted(ROLES), "Built-in task (data/tasks.py)."
)
_ROLE = flags.DEFINE_enum(
    "role",
    "teacher",
    sorted(ARITHMETIC_ROLES),
    "Which preset of shape and schedule to use.",
)
_OUT = flags.DEFINE_string("out", None, "Output HF checkpoint directory.")
_DIFFICULTY = flags.DEFINE_string(
    "difficulty",
    None,
    "Task difficulty (default: 'easy' for arithmetic, 'default' for"
    " countdown).",
)
_DATA_SEED = flags.DEFINE_integer("data_seed", 0, "Task generator seed.")
_SEED = flags.DEFINE_integer("seed", None, "Init/shuffle seed (role's).")
_STEPS = flags.DEFINE_integer("num_steps", None, "SFT steps (role's).")
_EXAMPLES = flags.DEFINE_integer(
    "num_examples", None, "Train problems (role's)."
)
_BATCH = flags.DEFINE_integer("batch_size", None, "Batch size (role's).")
_LR = flags.DEFINE_float("learning_rate", None, "Peak LR (role's).")
_LAYERS = flags.DEFINE_integer("num_layers", None, "Layers (role's).")
_WIDTH = flags.DEFINE_integer("embed_dim", None, "Width (role's).")
_EVAL = flags.DEFINE_integer("eval_examples", 512, "Held-out problems.")
_SAVE_DTYPE = flags.DEFINE_enum(
    "save_dtype",
    "float32",
    ["float32", "bfloat16"],
    "dtype of the written safetensors.",
)

_CHECKPOINT_DIR = flags.DEFINE_string(
    "checkpoint_dir",
    None,
    "Where the run checkpoints and resumes (default: OUT.checkpoints).",
)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", 100, "Steps between checkpoints."
)
_EVAL_EVERY = flags.DEFINE_integer(
    "eval_every",
    0,
    "Greedy held-out accuracy on 64 test problems every this many steps"
    " (0: only at the end, on --eval_examples).",
)

_CONTEXT_FRACTION = flags.DEFINE_float(
    "context_fraction",
    None,
    "Fraction of the SFT prompts that carry a teacher context (a worked"
    " demonstration) before the question, so that the model learns to use"
    " one (self-distillation's teacher); 0: none (role's: teacher 0,"
    " student 0.25).",
)
_CONTEXT_TEMPLATE = flags.DEFINE_string(
    "context_template", "solution", "The context (data/context.py preset)."
)

# Per task and difficulty: prompt and response widths (countdown's bound
# its longest reference, see data/countdown.py).
MAX_PROMPT_LEN = {
    "arithmetic": {"easy": 32, "two_step": 32, "default": 48, "hard": 64},
    "countdown": {"easy": 24, "default": 24, "hard": 24},
}
MAX_NEW_TOKENS = {
    "arithmetic": {"easy": 32, "two_step": 32, "default": 64, "hard": 96},
    "countdown": {"easy": 384, "default": 512, "hard": 640},
}
DEFAULT_DIFFICULTY = {"arithmetic": "easy", "countdown": "default"}


def _context_prompt_len(task: str, difficulty: str) -> int:
  """Room for the demonstration (a worked solution) before the question."""
  if task == "arithmetic":
    return 64
  return MAX_NEW_TOKENS[task][difficulty] + 16


def model_config(
    role: dict, vocab_size: int, max_positions: int = 256
) -> ModelConfig:
  """The role's Qwen3-style decoder over the task tokenizer's ids."""
  d, heads = role["embed_dim"], role["num_heads"]
  return ModelConfig(
      family="qwen3",
      vocab_size=vocab_size,
      embed_dim=d,
      num_layers=role["num_layers"],
      num_heads=heads,
      num_kv_heads=heads,
      head_dim=d // heads,
      mlp_dim=role["mlp_dim"],
      qk_norm=True,
      tie_embeddings=False,
      max_position_embeddings=max_positions,
      bos_token_id=task_tokenizer.BOS_ID,
      eos_token_ids=(task_tokenizer.EOS_ID,),
      pad_token_id=task_tokenizer.PAD_ID,
  )


def _role() -> dict:
  role = dict(ROLES[_TASK.value][_ROLE.value])
  for key, flag in (
      ("seed", _SEED),
      ("num_steps", _STEPS),
      ("num_examples", _EXAMPLES),
      ("batch_size", _BATCH),
      ("learning_rate", _LR),
      ("num_layers", _LAYERS),
      ("embed_dim", _WIDTH),
      ("context_fraction", _CONTEXT_FRACTION),
  ):
    if flag.value is not None:
      role[key] = flag.value
  for key, flag in (
      ("checkpoint_every", _CHECKPOINT_EVERY),
      ("eval_every", _EVAL_EVERY),
  ):
    if flag.value < (1 if key == "checkpoint_every" else 0):
      raise InputError(f"--{key}: expected an integer >= 1, got {flag.value}")
  for key in ("num_steps", "num_examples", "batch_size", "num_layers"):
    if role[key] < 1:
      raise InputError(f"--{key}: expected an integer >= 1, got {role[key]}")
  if _EVAL.value < 1:
    raise InputError(
        f"--eval_examples: expected an integer >= 1, got {_EVAL.value}"
    )
  if not role["learning_rate"] > 0:
    raise InputError(
        f"--learning_rate: expected > 0, got {role['learning_rate']}"
    )
  if not 0 <= role["context_fraction"] <= 1:
    raise InputError(
        "--context_fraction: expected a fraction in [0, 1], got"
        f" {role['context_fraction']}"
    )
  if role["embed_dim"] < 1 or role["embed_dim"] % role["num_heads"]:
    raise InputError(
        "--embed_dim: expected a positive multiple of num_heads"
        f" ({role['num_heads']}), got {role['embed_dim']}"
    )
  return role


def prepare_out(out: str | None) -> None:
  """--out: a new or empty directory; a model already there moves aside.

  The previous contents go to the sibling `OUT.previous-<time>/` (an HF
  directory must hold one model), with one line saying so: retraining the
  shipped checkpoints in place keeps the old ones.
  """
  if not out:
    raise InputError("--out is required (the HF checkpoint directory)")
  if os.path.exists(out) and not os.path.isdir(out):
    raise InputError(f"--out: {out} is a file, not a directory")
  if os.path.isdir(out) and os.listdir(out):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.normpath(out)
    dest, n = f"{base}.previous-{stamp}", 1
    while os.path.exists(dest):
      n += 1
      dest = f"{base}.previous-{stamp}-{n}"
    os.rename(out, dest)
    print(f"--out: the previous contents of {out} moved to {dest}")


def open_checkpoints(directory: str, settings: dict) -> None:
  """Makes `directory` this run's: new, or holding the same settings.

  A directory left by a run with other settings is refused by name
  (resuming it would mix two runs); nothing in it is touched.
  """
  path = os.path.join(directory, "settings.json")
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise InputError(f"--checkpoint_dir: {directory} is a file")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    changed = sorted(
        k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k)
    )
    if changed:
      k = changed[0]
      raise InputError(
          f"--checkpoint_dir: {directory} holds a run with other settings"
          f" ({k}: {saved.get(k)!r} there, {settings.get(k)!r} now); move it"
          " away to start over, or run with its settings to resume it"
      )
    return
  if os.path.isdir(directory) and os.listdir(directory):
    raise InputError(
        f"--checkpoint_dir: {directory} is not empty and holds no"
        " settings.json of a train_teacher run"
    )
  os.makedirs(directory, exist_ok=True)
  with open(path, "w") as f:
    json.dump(settings, f, indent=1, sort_keys=True)


def search_metrics(responses, answers) -> dict[str, float]:
  """Countdown searches' error rates (`countdown.search_stats`, summed over
  the responses): wrong arithmetic per move, wrong target and verdict per
  final line, repeated moves per move, and the share that ended."""
  total = dict.fromkeys(countdown.SEARCH_STATS, 0)
  for text, answer in zip(responses, answers):
    target = countdown.parse_key(answer)[1]
    for k, v in countdown.search_stats(text, target).items():
      total[k] += v
  moves, finals = max(total["moves"], 1), max(total["finals"], 1)
  return {
      "eval/arith_err": total["arithmetic_wrong"] / moves,
      "eval/target_err": total["target_wrong"] / finals,
      "eval/verdict_err": total["verdict_wrong"] / finals,
      "eval/repeats": total["repeated"] / moves,
      "eval/ended": total["ended"] / max(len(responses), 1),
  }


def main(argv):
  del argv  # cli.run refuses positional arguments
  start = time.time()
  role = _role()
  out = _OUT.value
  name = _TASK.value
  level = _DIFFICULTY.value or DEFAULT_DIFFICULTY[name]
  try:
    tasks.check_difficulty(name, level, field="--difficulty")
  except ValueError as e:
    raise InputError(str(e)) from None
  checkpoints = (
      _CHECKPOINT_DIR.value or f"{os.path.normpath(out or '')}.checkpoints"
  )
  settings = dict(
      role,
      task=name,
      difficulty=level,
      data_seed=_DATA_SEED.value,
      context_template=_CONTEXT_TEMPLATE.value,
      # The generator's text, not only its flags: a resume across a
      # changed trace format is refused.
      data_fingerprint=TaskSource(
          "train", 16, task=name, difficulty=level, seed=_DATA_SEED.value
      ).fingerprint(),
  )
  resuming = os.path.exists(os.path.join(checkpoints, "settings.json"))
  if not resuming:
    prepare_out(out)  # every flag checked first
  elif not out:
    raise InputError("--out is required (the HF checkpoint directory)")
  open_checkpoints(checkpoints, settings)
  tok_dir = task_tokenizer.build_task_tokenizer(out, name)
  tokenizer = task_tokenizer.load_task_tokenizer(tok_dir)
  kw = dict(task=name, difficulty=level, seed=_DATA_SEED.value)
  p, t = MAX_PROMPT_LEN[name][level], MAX_NEW_TOKENS[name][level]
  source = TaskSource("train", role["num_examples"], **kw)
  ctx = None
  if role["context_fraction"] > 0:
    ctx = contexts.TeacherContext(
        _CONTEXT_TEMPLATE.value, p + _context_prompt_len(name, level)
    )
    source = contexts.ContextSource(source, ctx, role["context_fraction"])
  train = PromptDataset(
      source,
      tokenizer,
      max_prompt_len=p if ctx is None else ctx.max_prompt_len,
      max_new_tokens=t,
  )
  config = model_config(role, len(tokenizer), tasks.get(name).max_length)
  model = Transformer(config, rngs=nnx.Rngs(role["seed"]))
  print(
      f"{_ROLE.value}: {config.num_params():,} parameters, {len(train)}"
      f" train problems ({name}, {level}), {role['num_steps']} steps"
  )

  def greedy_accuracy(model, n: int, context=None):
    """(questions, evaluation) on `n` test problems, with `context`'s
    demonstration before each when given (the self-teacher's prompt)."""
    source, width, overlong = TaskSource("test", n, **kw), p, "drop"
    if context is not None:  # a long demonstration loses its start
      source = contexts.ContextSource(source, context)
      width, overlong = context.max_prompt_len, "truncate"
    held_out = PromptDataset(
        source, tokenizer, max_prompt_len=width, overlong=overlong
    )
    return held_out, evaluation.evaluate(
        model,
        held_out,
        tokenizer,
        TaskGrader(name),
        key=jax.random.PRNGKey(0),
        batch_size=128,
        max_new_tokens=t,
        eos_ids=config.eos_token_ids,
    )

  def during_training(model) -> dict[str, float]:
    held_out, result = greedy_accuracy(model, min(64, _EVAL.value))
    metrics = {"eval/accuracy": result.accuracy}
    metrics["eval/length"] = result.mean_length
    if name == "countdown":  # which skill of the search is missing
      metrics.update(search_metrics(result.responses, held_out.answers))
    return metrics

  settings = sft.SftSettings(
      num_steps=role["num_steps"],
      batch_size=role["batch_size"],
      learning_rate=role["learning_rate"],
      warmup_steps=min(100, role["num_steps"] // 10),
      seed=role["seed"],
      # Countdown's references vary 53..473 tokens: batch by length.
      length_groups=role["length_groups"],
      log_every=max(role["num_steps"] // 20, 1),
      checkpoint_every=_CHECKPOINT_EVERY.value,
      evaluate_every=_EVAL_EVERY.value,
  )
  model, _ = sft.sft_train(
      model,
      train,
      settings,
      workdir=checkpoints,
      evaluate=during_training,
  )
  if _SAVE_DTYPE.value == "bfloat16":
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.bfloat16), state))
  save_hf(model, out)
  held_out, result = greedy_accuracy(model, _EVAL.value)
  print(
      f"held-out accuracy {result.accuracy:.3f} on {len(held_out)} test"
      f" problems, mean length {result.mean_length:.1f} tokens"
  )
  print(f"  e.g. {held_out.questions[0]!r} -> {result.responses[0]!r}")
  if ctx is not None:  # the self-teacher's accuracy with the context
    with_context = greedy_accuracy(model, _EVAL.value, ctx)[1]
    print(
        f"held-out accuracy with the {_CONTEXT_TEMPLATE.value!r} context"
        f" {with_context.accuracy:.3f} (bare {result.accuracy:.3f})"
    )
  size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
  print(f"wrote {out} ({size / 1e6:.1f} MB) in {time.time() - start:.0f}s")
  shutil.rmtree(checkpoints)  # the model is written: its run is done


if __name__ == "__main__":
  cli.run(main)
