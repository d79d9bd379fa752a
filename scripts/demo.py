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
r"""The README's main command (`make demo`): on-policy distillation end to end.

  python scripts/demo.py [--workdir=./workdir_demo] [--resume]
      [--config=configs/demo.py] [--config.total_steps=200 ...]

Loads the shipped teacher and student (assets/demo/, see
scripts/train_teacher.py), evaluates both on held-out problems, distils the
student on-policy with TIP Soft-OR (rho 0.5, reverse KL), evaluates it
again and prints a table (accuracy, mean response length, selected-token
fraction), writes PNG plots of loss, held-out accuracy and selected
fraction over steps, and prints the wall time.

The workdir: the demo marks it as its own (a `.opd_jax_demo` file). A rerun
starts fresh and keeps the previous demo run, moved to
WORKDIR/previous_runs/<time>/ (it says so); pass --resume to continue that
run from its last checkpoint instead. A non-empty directory without the
mark (a training run, anything else) is never touched: the script stops
with one `error:` line naming it.
"""

import os
import time

from absl import flags

from opd_jax import cli
from opd_jax.cli import InputError
from opd_jax.trainer.plots import read_metrics, series, write_plots

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CONFIG = cli.define_config_file(
    "config", os.path.join(REPO, "configs", "demo.py"), "Demo config file."
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    os.path.join(REPO, "workdir_demo"),
    "Run directory: checkpoints, metrics.jsonl, plots/.",
)
_RESUME = flags.DEFINE_bool(
    "resume", False, "Continue the run in --workdir instead of starting fresh."
)

# The file that marks a workdir as the demo's: only such a directory is
# moved aside for a fresh run (a training run's holds the same file names).
MARKER = ".opd_jax_demo"


def prepare_workdir(workdir: str, resume: bool) -> None:
  """Starts fresh (the previous demo run moved aside) unless resuming.

  Refuses a file, and a non-empty directory the demo did not make.
  """
  from opd_jax.trainer import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise InputError(f"--workdir={workdir} is a file, not a directory")
  marker = os.path.join(workdir, MARKER)
  if not os.path.isdir(workdir) or not os.listdir(workdir):
    os.makedirs(workdir, exist_ok=True)
  elif resume:
    print(f"resuming the run in {workdir}")
  elif not os.path.isfile(marker):
    raise InputError(
        f"--workdir={workdir} is not empty and is not a demo run (no"
        f" {MARKER} file, which the demo writes in its workdir); choose"
        " another --workdir, or pass --resume to continue a run there"
    )
  else:
    dest = workdir_lib.move_aside(workdir)
    print(
        f"starting fresh: the previous demo run in {workdir} moved to {dest}"
        " (pass --resume to continue it instead)"
    )
  with open(marker, "w", encoding="utf-8") as f:
    f.write("made by scripts/demo.py\n")


def _mean_tail(rows, name: str, n: int = 10) -> float | None:
  _, values = series(rows, name)
  return sum(values[-n:]) / len(values[-n:]) if values else None


def print_table(results: dict, fractions: dict) -> None:
  """teacher / student before / student after, one row each."""
  print()
  print(f"{'model':16s} {'accuracy':>9s} {'mean len':>9s} {'selected':>9s}")
  for name, r in results.items():
    frac = fractions.get(name)
    frac = "-" if frac is None else f"{frac:.3f}"
    print(f"{name:16s} {r.accuracy:9.3f} {r.mean_length:9.1f} {frac:>9s}")
  print(
      f"({r.num_questions} held-out problems, greedy; 'selected' is the"
      " fraction of response tokens TIP kept, first step / mean of the"
      " last 10)"
  )


def _example_index(data, results) -> int:
  """A held-out problem the student got wrong before and right after."""
  from opd_jax.data import arithmetic  # pylint: disable=g-import-not-at-top

  before = results["student before"].responses
  after = results["student after"].responses
  for i, answer in enumerate(data.answers):
    if arithmetic.is_correct(
        after[i], int(answer)
    ) and not arithmetic.is_correct(before[i], int(answer)):
      return i
  return 0


def main(argv):
  del argv  # cli.run refuses positional arguments
  start = time.time()
  # Imported after absl parsed the flags: importing JAX is the slow part.
  import jax  # pylint: disable=g-import-not-at-top
  from opd_jax.evaluation import evaluate as evaluation  # pylint: disable=g-import-not-at-top
  from opd_jax.evaluation.graders import TaskGrader  # pylint: disable=g-import-not-at-top
  from opd_jax.models import load_hf  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import loop  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import reporting  # pylint: disable=g-import-not-at-top

  from opd_jax.trainer import config as config_lib  # pylint: disable=g-import-not-at-top

  c, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
  for role in ("student", "teacher"):
    if not os.path.isdir(c[role]):
      raise InputError(
          f"config.{role}: {c[role]} is not a directory; the demo ships it in"
          " assets/demo/ (or rebuild it with scripts/train_teacher.py)"
      )
  # Every check of the config before the workdir is touched.
  overridden = tuple(cli.config_overrides())
  run = config_lib.start_run(c, overridden=overridden)
  prepare_workdir(workdir, _RESUME.value)
  trainer = loop.Trainer(run, workdir)

  def evaluate(model):
    # The same call as Trainer.evaluate: same problems, key and budget.
    return evaluation.evaluate(
        model,
        trainer.eval_data,
        trainer.tokenizer,
        TaskGrader("arithmetic"),
        key=jax.random.PRNGKey(c.seed),
        mesh=trainer.mesh,
        batch_size=c.batch_size,
        max_new_tokens=c.max_new_tokens,
        eos_ids=trainer.eos_ids,
    )

  results = {
      "teacher": evaluate(trainer.teacher),
      "student before": evaluate(load_hf(c.student)),
  }
  print(
      f"teacher accuracy {results['teacher'].accuracy:.3f}, student before"
      f" {results['student before'].accuracy:.3f}"
      f" ({time.time() - start:.0f}s)",
      flush=True,
  )
  if trainer.start_step == 0:  # the starting point of the accuracy curve
    trainer.writer.write_scalars(0, results["student before"].metrics())
  trainer.run()
  results["student after"] = evaluate(trainer.student())

  rows = read_metrics(os.path.join(workdir, reporting.JSONL_NAME))
  _, fracs = series(rows, "select/frac")
  fractions = {
      "student before": fracs[0] if fracs else None,
      "student after": _mean_tail(rows, "select/frac"),
  }
  print_table(results, fractions)
  gain = results["student after"].accuracy - results["student before"].accuracy
  print(
      f"student gain: {gain:+.3f} accuracy after {c.total_steps} steps of"
      f" {c.method} ({c.tip.selector}, rho {c.tip.rho})"
  )
  i = _example_index(trainer.eval_data, results)
  print(
      f"  e.g. {trainer.eval_data.questions[i]!r} (answer"
      f" {trainer.eval_data.answers[i]})\n"
      f"    before: {results['student before'].responses[i]!r}\n"
      f"    after:  {results['student after'].responses[i]!r}"
  )
  paths = write_plots(
      rows, os.path.join(workdir, "plots"), results["teacher"].accuracy
  )
  print("plots: " + ", ".join(paths))
  print(f"metrics: {os.path.join(workdir, reporting.JSONL_NAME)}")
  print(f"total wall time {time.time() - start:.0f}s")
  return 0


if __name__ == "__main__":
  cli.run(main)
