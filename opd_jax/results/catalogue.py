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
"""The rows and claims every results grid draws on.

A grid file (configs/grids/*.py) picks its rows and claims from here by
name and changes only what its regime needs (`dataclasses.replace` on a
row, extra overrides), so two grids that test the same claim test it on
the same row definition. Rows name config overrides (`Variant`); claims
name rows (`Claim`, judged by docs/evaluation.md's rules). Margins: 0.05
(5 points of accuracy) where a paper says "within noise" / "retains"
without a number; DEAR's stated +2.5 points.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from opd_jax.methods import tsd_kd
from opd_jax.results.claims import Claim
from opd_jax.results.grid import Variant


def _tip(name: str, label: str, **overrides) -> Variant:
  return Variant(
      name, label, "tip", {f"tip.{k}": v for k, v in overrides.items()}
  )


ROWS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("no_opd", "SFT init (no OPD)", None),
        Variant("rkl", "full-token reverse KL", "rkl"),
        Variant(
            "gkd",
            "GKD (JSD 0.5, all tokens)",
            "gkd",
            {"gkd.loss_pass.jsd_beta": 0.5},
        ),
        Variant(
            "gkd_0p9",
            "GKD (JSD 0.9, TSD-KD's baseline)",
            "gkd",
            {"gkd.loss_pass.jsd_beta": 0.9},
        ),
        Variant("sampled_rkl", "sampled-token reverse KL", "sampled_rkl"),
        _tip("tip_entropy_50", "TIP entropy 50%", selector="entropy", rho=0.5),
        _tip("tip_soft_or_50", "TIP Soft-OR 50%", selector="soft_or", rho=0.5),
        _tip("tip_soft_or_20", "TIP Soft-OR 20%", selector="soft_or", rho=0.2),
        _tip(
            "tip_q3",
            "TIP Q3 only (low H, high D)",
            selector="quadrant",
            which=3,
        ),
        _tip(
            "tip_bottom_soft_or_50",
            "TIP bottom Soft-OR 50% (control)",
            selector="bottom_soft_or",
            rho=0.5,
        ),
        _tip(
            "tip_random_50", "random 50% (control)", selector="random", rho=0.5
        ),
        Variant("tsd_kd", "TSD-KD", "tsd_kd"),
        Variant(
            "tsd_kd_no_gate",
            "TSD-KD without gate",
            "tsd_kd",
            {"tsd_kd.gate": False},
        ),
        Variant(
            "tsd_kd_no_opener",
            "TSD-KD without opener ranking",
            "tsd_kd",
            {"tsd_kd.alpha": 0.0},
        ),
        Variant(
            "tsd_kd_no_em",
            "TSD-KD without entropy min.",
            "tsd_kd",
            {"tsd_kd.em_ratio": 0.0},
        ),
        Variant(
            "tsd_kd_em_0p1",
            "TSD-KD, EM weight 0.1",
            "tsd_kd",
            {"tsd_kd.em_weight": 0.1},
        ),
        # The released code's reading (docs/methods.md §2(d) items 1-3).
        Variant(
            "tsd_kd_code",
            "TSD-KD as the released code (EM ~90%, code PL order, opener per"
            " 4 rows)",
            "tsd_kd",
            {f"tsd_kd.{k}": v for k, v in tsd_kd.CODE_FAITHFUL.items()},
        ),
        Variant(
            "tsd_kd_gated_jsd",
            "TSD-KD gated JSD alone (no opener ranking, no entropy min.)",
            "tsd_kd",
            {"tsd_kd.alpha": 0.0, "tsd_kd.em_ratio": 0.0},
        ),
        Variant("dear", "DEAR (p = q = 0.2)", "dear"),
        Variant(
            "dear_decision_only",
            "DEAR decision only (q = 0)",
            "dear",
            {"dear.q": 0.0},
        ),
        Variant("minillm", "MiniLLM", "minillm"),
    )
}

# Self-distillation's contexts: the frozen initial student, shown one in
# front of the question, teaches the student (configs/opsd.py).
OPSD_CONTEXTS = {
    "solution": "self-teacher with the solution",
    "summary": "self-teacher with a summary",
    "correct_wrong": "self-teacher with a correct and a wrong solution",
}


def rows(*names: str, **extra: Mapping[str, Any]) -> list[Variant]:
  """The catalogue's rows `names`, in order; `extra[name]` adds overrides."""
  unknown = sorted(set(names) - set(ROWS))
  if unknown:
    raise ValueError(f"rows: expected names in {sorted(ROWS)}, got {unknown}")
  out = []
  for name in names:
    row = ROWS[name]
    if name in extra:
      row = dataclasses.replace(row, overrides={**row.overrides, **extra[name]})
    out.append(row)
  return out


def teacher_row(teacher: str) -> Variant:
  """The teacher evaluated as it is: the ceiling of every row."""
  return Variant(
      "teacher", "teacher (reference, not trained)", None, {"student": teacher}
  )


def opsd_row(template: str, prompt_len: int, label: str = "") -> Variant:
  """OPSD with context `template` ('solution' is the row named 'opsd')."""
  label = label or OPSD_CONTEXTS[template]
  return Variant(
      "opsd" if template == "solution" else f"opsd_{template}",
      f"OPSD ({label}, reverse KL)",
      "rkl",
      {
          "teacher": "self",
          "self_teacher.weights": "initial",
          "teacher_context.template": template,
          "teacher_context.max_prompt_len": prompt_len,
      },
  )


def topd_rows(label: str = "TOPD", **overrides: Any) -> list[Variant]:
  """TOPD and NDS alone (its near-future guidance off, docs/methods.md §5)."""
  settings = {f"topd.{k}": v for k, v in overrides.items()}
  return [
      Variant("topd", label, "topd", settings),
      Variant(
          "topd_nds_only",
          "TOPD NDS only",
          "topd",
          {**settings, "topd.lambda_traj": 0.0},
      ),
  ]


CLAIMS: dict[str, Claim] = {
    "opd": Claim(
        "OPD", "OPD beats the SFT initialisation", "rkl", ">", "no_opd"
    ),
    "tip_entropy": Claim(
        "TIP",
        "entropy-50% matches full-token (within 5 points) at 47% less"
        " step memory",
        "tip_entropy_50",
        "~",
        "rkl",
        margin=0.05,
        # Qwen3 pair 72.0 GB -> 38.1 GB at 50% (docs/methods.md §3).
        memory_ratio=0.53,
    ),
    "tip_soft_or": Claim(
        "TIP",
        "Soft-OR 50% beats entropy 50%",
        "tip_soft_or_50",
        ">",
        "tip_entropy_50",
    ),
    "tip_q3": Claim(
        "TIP",
        "Q3 only (< 20% of tokens) matches full-token (within 5 points)",
        "tip_q3",
        "~",
        "rkl",
        margin=0.05,
        max_select_frac=0.2,
    ),
    "tip_bottom": Claim(
        "TIP",
        "bottom Soft-OR is clearly worse than top Soft-OR",
        "tip_soft_or_50",
        ">",
        "tip_bottom_soft_or_50",
    ),
    "tip_random": Claim(
        "TIP",
        "Soft-OR 50% beats a random 50%",
        "tip_soft_or_50",
        ">",
        "tip_random_50",
    ),
    "tsd_kd": Claim("TSD-KD", "TSD-KD beats GKD", "tsd_kd", ">", "gkd"),
    "tsd_kd_0p9": Claim(
        "TSD-KD", "TSD-KD beats GKD at beta 0.9", "tsd_kd", ">", "gkd_0p9"
    ),
    "tsd_kd_code": Claim(
        "TSD-KD",
        "TSD-KD (the released code's reading) beats GKD",
        "tsd_kd_code",
        ">",
        "gkd",
    ),
    "tsd_kd_code_0p9": Claim(
        "TSD-KD",
        "TSD-KD (the released code's reading) beats GKD at beta 0.9",
        "tsd_kd_code",
        ">",
        "gkd_0p9",
    ),
    "tsd_kd_gate": Claim(
        "TSD-KD",
        "removing the gate loses something",
        "tsd_kd",
        ">",
        "tsd_kd_no_gate",
    ),
    "tsd_kd_opener": Claim(
        "TSD-KD",
        "removing opener ranking loses something",
        "tsd_kd",
        ">",
        "tsd_kd_no_opener",
    ),
    "tsd_kd_em": Claim(
        "TSD-KD",
        "removing entropy minimisation loses something",
        "tsd_kd",
        ">",
        "tsd_kd_no_em",
    ),
    "tsd_kd_gated_jsd": Claim(
        "TSD-KD",
        "opener ranking and entropy minimisation add to the gated JSD",
        "tsd_kd",
        ">",
        "tsd_kd_gated_jsd",
    ),
    "dear": Claim(
        "DEAR", "DEAR beats OPD by 2.5 points", "dear", ">", "rkl", margin=0.025
    ),
    "dear_decision": Claim(
        "DEAR",
        "DEAR beats decision-only by 2.5 points (decision-only ~ OPD)",
        "dear",
        ">",
        "dear_decision_only",
        margin=0.025,
    ),
    "opsd": Claim(
        "OPSD",
        "a self-teacher shown the solution beats the SFT initialisation",
        "opsd",
        ">",
        "no_opd",
    ),
    "topd": Claim("TOPD", "TOPD beats OPD", "topd", ">", "rkl"),
    "topd_nds": Claim(
        "TOPD", "NDS alone helps a little", "topd_nds_only", ">", "rkl"
    ),
}


def claims(*keys: str) -> list[Claim]:
  """The catalogue's claims `keys`, in order."""
  unknown = sorted(set(keys) - set(CLAIMS))
  if unknown:
    raise ValueError(
        f"claims: expected keys in {sorted(CLAIMS)}, got {unknown}"
    )
  return [CLAIMS[k] for k in keys]
