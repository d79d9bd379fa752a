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
"""Token maps: channels against numpy, selector masks, escaping, JSON."""

import dataclasses
import html.parser
import json
import math
import os
import shutil
import subprocess

import jax.numpy as jnp
import numpy as np
import pytest

from opd_jax import selection
from opd_jax import testing
from opd_jax.diagnostics import token_map as tm
from opd_jax.diagnostics import token_map_html
from opd_jax.rollouts import Rollout

HOSTILE = [
    "<script>alert(1)</script>",
    "</script><b>x",
    "a & b",
    '"q"',
    "line\nbreak",
    "",
    "\u2028",
]


def _peaky(config, seed, scale):
  # Random tiny models are near-uniform; a scaled head spreads entropies and
  # divergences so that the selectors have something to rank.
  model = testing.random_model(config, seed=seed)
  model.lm_head.kernel[...] = model.lm_head.kernel[...] * scale
  return model


@pytest.fixture(scope="module")
def pair():
  config = testing.tiny_config("qwen3", vocab_size=97)
  student = _peaky(config, 0, 30.0)
  teacher = _peaky(config.replace(embed_dim=64, mlp_dim=128), 1, 30.0)
  rng = np.random.default_rng(0)
  b, p, t = 3, 5, 9
  prompt = rng.integers(3, 97, (b, p)).astype(np.int32)
  prompt_mask = np.ones((b, p), bool)
  prompt_mask[1, :2] = False  # left padding
  prompt[1, :2] = 0
  lengths = np.array([9, 6, 2])
  response_mask = np.arange(t)[None] < lengths[:, None]
  response = np.where(response_mask, rng.integers(3, 97, (b, t)), 0)
  rollout = Rollout(
      prompt=jnp.asarray(prompt),
      prompt_mask=jnp.asarray(prompt_mask),
      response=jnp.asarray(response, jnp.int32),
      response_mask=jnp.asarray(response_mask),
      logprobs=jnp.zeros((b, t)),
  )
  token_map = tm.compute_token_map(student, teacher, rollout)
  return student, teacher, rollout, token_map


def _log_softmax64(logits):
  z = np.asarray(logits, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _response_outputs(model, rollout):
  t = rollout.response.shape[1]
  out = model(rollout.tokens, attention_mask=rollout.mask)
  return (
      np.asarray(out.logits)[:, -t - 1 : -1],
      np.asarray(out.hidden)[:, -t - 1 : -1],
  )


def test_channels_match_numpy_float64(pair):
  student, teacher, rollout, token_map = pair
  mask = np.asarray(rollout.response_mask)
  ids = np.asarray(rollout.response)
  ls = _log_softmax64(_response_outputs(student, rollout)[0])
  lt = _log_softmax64(_response_outputs(teacher, rollout)[0])
  hs = -(np.exp(ls) * ls).sum(-1)
  ht = -(np.exp(lt) * lt).sum(-1)
  rkl = (np.exp(ls) * (ls - lt)).sum(-1)
  take = lambda lp: np.take_along_axis(lp, ids[..., None], -1)[..., 0]
  want = {
      "student_entropy": hs,
      "teacher_entropy": ht,
      "reverse_kl": rkl,
      "student_logprob": take(ls),
      "teacher_logprob": take(lt),
      "rkl_divergence": rkl,
      "tsd_kd_gate": 1.0 / (1.0 + np.exp(-(hs - ht))),
  }
  h = hs / math.log(97)
  h = np.minimum(h, np.quantile(h[mask], 0.98))
  norm = lambda x: (x - x[mask].min()) / (x[mask].max() - x[mask].min())
  want["tip_score"] = 1 - (1 - norm(h)) * (1 - norm(rkl))
  # The spread matters for the selectors (and the page's colours).
  assert np.ptp(hs[mask]) > 1.0 and np.ptp(rkl[mask]) > 1.0
  # The models' channels, then the methods' (registry order, defaults).
  assert list(token_map.channels) == list(tm.CHANNELS) + [
      "gkd_divergence",
      "rkl_divergence",
      "tip_score",
      "tsd_kd_gate",
  ]
  assert token_map.ranges == {"tip_score": (0.0, 1.0), "tsd_kd_gate": (0, 1)}
  for name, ref in want.items():
    got = token_map.channels[name]
    assert got.dtype == np.float32 and got.shape == mask.shape
    np.testing.assert_allclose(
        got[mask], ref[mask], rtol=1e-5, atol=1e-5, err_msg=name
    )
    assert np.all(got[~mask] == 0), name


def test_selector_masks_equal_the_selection_functions(pair):
  from opd_jax.methods import TIP  # pylint: disable=g-import-not-at-top

  student, teacher, rollout, token_map = pair
  mask = jnp.asarray(rollout.response_mask)
  c = token_map.channels
  hs, ht, rkl = c["student_entropy"], c["teacher_entropy"], c["reverse_kl"]
  hidden = _response_outputs(student, rollout)[1]
  dear = selection.dear_tokens(hs, rkl, hidden, mask, p=0.2, q=0.2)
  # docs/methods.md defaults, spelled out.
  want = {
      "dear_decision": dear.decision,
      "dear_evidence": dear.evidence,
      "tip_soft_or": (
          selection.soft_or(
              hs, rkl, mask, 0.5, vocab_size=97, clip_quantile=0.98
          ).weights
          > 0
      ),
      "tsd_kd_em": selection.entropy_min_set(hs, mask, ratio=0.1),
      "tsd_kd_opener": selection.opener_mask(hs, mask, threshold=0.1),
  }
  assert list(token_map.selectors) == list(want)
  # TIP's other selectors, compared beside the defaults.
  more = tm.compute_token_map(
      student,
      teacher,
      rollout,
      compare=(
          *tm.comparison_methods(),
          TIP(selector="entropy"),
          TIP(selector="quadrant"),
      ),
  )
  want.update({
      "tip_entropy": selection.entropy_top(hs, mask, 0.5).weights > 0,
      "tip_quadrant": (
          selection.quadrant_select(
              hs, rkl, mask, which=3, q_entropy=0.5, q_divergence=0.8
          ).weights
          > 0
      ),
  })
  assert list(more.selectors) == list(want)
  for name, ref in want.items():
    np.testing.assert_array_equal(more.selectors[name], ref, err_msg=name)
  np.testing.assert_array_equal(
      token_map.channels["tip_score"],
      selection.soft_or_scores(hs, rkl, mask, vocab_size=97),
  )
  np.testing.assert_array_equal(
      token_map.channels["tsd_kd_gate"][token_map.mask],
      selection.confidence_gate(hs, ht)[token_map.mask],
  )
  lengths = token_map.mask.sum(axis=1)
  np.testing.assert_array_equal(
      token_map.selectors["tip_soft_or"].sum(axis=1), lengths // 2
  )
  for name, sel in more.selectors.items():
    assert not np.any(sel & ~token_map.mask), name


def test_comparisons_are_the_registered_methods_at_their_defaults(pair):
  from opd_jax import methods  # pylint: disable=g-import-not-at-top

  compared = tm.comparison_methods()
  names = [methods.method_name(m) for m in compared]
  assert names == [
      n
      for n in methods.REGISTRY
      if methods.has_token_sets(methods.build_method(n))
      and not methods.has_stage(methods.build_method(n))
  ]
  assert {"tip", "dear", "gkd"} <= set(names) and "topd" not in names
  assert all(m == methods.build_method(n) for m, n in zip(compared, names))
  assert "tip" not in [
      methods.method_name(m) for m in tm.comparison_methods(exclude=["tip"])
  ]
  # A run's method comes first, with its config in the header.
  student, teacher, rollout, _ = pair
  run = tm.compute_token_map(
      student, teacher, rollout, method=methods.build_method("dear", {"q": 0.4})
  )
  assert list(run.selectors)[:2] == ["dear_decision", "dear_evidence"]
  assert run.meta["method"] == "dear" and run.meta["settings.dear.q"] == 0.4
  assert list(run.selectors).count("dear_decision") == 1


def test_other_settings_change_the_masks(pair):
  from opd_jax.methods import TIP  # pylint: disable=g-import-not-at-top

  student, teacher, rollout, token_map = pair
  other = tm.compute_token_map(student, teacher, rollout, method=TIP(rho=0.2))
  lengths = token_map.mask.sum(axis=1)
  np.testing.assert_array_equal(
      other.selectors["tip_soft_or"].sum(axis=1), (lengths * 2) // 10
  )


def test_gkd_channel_is_its_loss_term_at_the_loss_temperature(pair):
  from opd_jax import losses  # pylint: disable=g-import-not-at-top
  from opd_jax.methods import GKD  # pylint: disable=g-import-not-at-top

  student, teacher, rollout, _ = pair
  gkd = GKD(loss_pass={"jsd_beta": 0.3, "temperature": 0.6})
  token_map = tm.compute_token_map(
      student, teacher, rollout, method=gkd, compare=()
  )
  zs = _response_outputs(student, rollout)[0]
  zt = _response_outputs(teacher, rollout)[0]
  mask = np.asarray(rollout.response_mask)
  want = losses.generalized_jsd(
      jnp.asarray(zs), jnp.asarray(zt), beta=0.3, temperature=0.6, where=mask
  )
  np.testing.assert_allclose(
      token_map.channels["gkd_divergence"], want, rtol=1e-5, atol=1e-6
  )
  assert list(token_map.selectors) == []  # every token is trained on


def test_a_method_registered_here_appears_with_no_edit_to_diagnostics(pair):
  from opd_jax import methods  # pylint: disable=g-import-not-at-top
  from opd_jax.methods import base  # pylint: disable=g-import-not-at-top
  from opd_jax.methods import common  # pylint: disable=g-import-not-at-top

  @dataclasses.dataclass(frozen=True)
  class Tiny:
    """Trains on the tokens above a student-logprob cut."""

    cut: float = -3.0

    def loss(self, inputs):
      raise NotImplementedError

    def token_sets(self, inputs):
      lp = common.sampled_token_logprobs(inputs)[0]
      keep = jnp.asarray(inputs.mask, bool) & (lp > self.cut)
      return {
          "kept": methods.TokenSet(keep, "log p_S(y) above the cut"),
          "logprob": methods.TokenSet(lp, "log p_S(y)", (-10.0, 0.0)),
      }

  student, teacher, rollout, token_map = pair
  methods.register("tiny_probe")(Tiny)
  try:
    shown = tm.compute_token_map(student, teacher, rollout)
    run = tm.compute_token_map(
        student, teacher, rollout, method=Tiny(cut=-2.0), compare=()
    )
  finally:
    del base.REGISTRY["tiny_probe"]
  lp = token_map.channels["student_logprob"]
  for got, cut in ((shown, -3.0), (run, -2.0)):
    np.testing.assert_array_equal(
        got.selectors["tiny_probe_kept"], token_map.mask & (lp > cut)
    )
    np.testing.assert_allclose(
        got.channels["tiny_probe_logprob"], lp, atol=1e-5
    )
    assert got.descriptions["tiny_probe_kept"] == "log p_S(y) above the cut"
    assert got.ranges["tiny_probe_logprob"] == (-10.0, 0.0)
  assert list(shown.selectors)[-1] == "tiny_probe_kept"
  assert run.meta == {"method": "tiny_probe", "settings.tiny_probe.cut": -2.0}


def test_a_teacher_context_scores_the_teachers_own_sequence(pair):
  # Self-distillation with a privileged context: the teacher scores
  # [its own prompt | response], longer and padded otherwise than the
  # student's [prompt | response]; the channels mix the two.
  student, teacher, rollout, _ = pair
  b, t = rollout.response.shape
  rng = np.random.default_rng(1)
  prompt = rng.integers(3, 97, (b, 8)).astype(np.int32)
  prompt_mask = np.ones((b, 8), bool)
  prompt_mask[2, :3] = False
  prompt[2, :3] = 0
  seen = dataclasses.replace(
      rollout,
      prompt=jnp.asarray(prompt),
      prompt_mask=jnp.asarray(prompt_mask),
  )
  got = tm.compute_token_map(
      student,
      teacher,
      rollout,
      teacher_tokens=seen.tokens,
      teacher_mask=seen.mask,
  )
  mask = np.asarray(rollout.response_mask)
  ids = np.asarray(rollout.response)
  ls = _log_softmax64(_response_outputs(student, rollout)[0])
  lt = _log_softmax64(_response_outputs(teacher, seen)[0])
  take = lambda lp: np.take_along_axis(lp, ids[..., None], -1)[..., 0]
  want = {
      "student_entropy": -(np.exp(ls) * ls).sum(-1),
      "teacher_entropy": -(np.exp(lt) * lt).sum(-1),
      "reverse_kl": (np.exp(ls) * (ls - lt)).sum(-1),
      "student_logprob": take(ls),
      "teacher_logprob": take(lt),
  }
  for name, ref in want.items():  # as in test_channels_match_numpy_float64
    np.testing.assert_allclose(
        got.channels[name][mask], ref[mask], rtol=1e-5, atol=1e-5, err_msg=name
    )
  # The methods' sets see the same teacher: rkl's channel is the channel.
  np.testing.assert_array_equal(
      got.channels["rkl_divergence"], got.channels["reverse_kl"]
  )
  assert got.meta["teacher sequence"].startswith("its own prompt")
  # A sequence that does not end in the response, or of another shape.
  wrong = seen.tokens.at[0, -1].set(seen.tokens[0, -1] + 1)
  with pytest.raises(ValueError, match="last T ids must be the rollout's"):
    tm.compute_token_map(
        student, teacher, rollout, teacher_tokens=wrong, teacher_mask=seen.mask
    )
  with pytest.raises(ValueError, match=r"expected \[3, Pt \+ 9\] each"):
    tm.compute_token_map(
        student,
        teacher,
        rollout,
        teacher_tokens=seen.tokens[:2],
        teacher_mask=seen.mask[:2],
    )
  # A staged method's branches would be cut from the student's sequence.
  from opd_jax.methods import TOPD  # pylint: disable=g-import-not-at-top

  with pytest.raises(ValueError, match="topd's pre-update stage"):
    tm.compute_token_map(
        student,
        teacher,
        rollout,
        teacher_tokens=seen.tokens,
        teacher_mask=seen.mask,
        compare=[TOPD()],
    )


def test_teacher_with_another_vocabulary_is_rejected(pair):
  student, _, rollout, _ = pair
  teacher = testing.random_model(testing.tiny_config("qwen3", vocab_size=101))
  with pytest.raises(
      ValueError, match="teacher vocab_size=101, student vocab_size=97"
  ):
    tm.compute_token_map(student, teacher, rollout)


class _ByteTokenizer:
  """Ids are UTF-8 bytes; decoding replaces a cut character with U+FFFD."""

  def decode(self, ids, skip_special_tokens=False):
    del skip_special_tokens
    return bytes(ids).decode("utf-8", errors="replace")


def test_token_pieces_follow_the_decoded_text():
  text = "Tom é 3+4=7 ✓"
  ids = list(text.encode("utf-8"))
  pieces = tm.token_pieces(_ByteTokenizer(), ids)
  assert len(pieces) == len(ids)
  assert "".join(pieces) == text
  cut = ids.index(0xC3)  # 'é' is two bytes: the first adds nothing.
  assert pieces[cut : cut + 2] == ["", "é"]


# A synthetic map's entries (any names do; these are a default map's).
SYNTH_CHANNELS = tm.CHANNELS + ("tip_score", "tsd_gate")
SYNTH_SELECTORS = (
    "tip_soft_or",
    "tip_entropy",
    "tip_quadrant",
    "tsd_opener",
    "tsd_em",
    "dear_decision",
    "dear_evidence",
)


def synthetic_map(seed=0):
  """A labelled TokenMap without models, with hostile token text."""
  rng = np.random.default_rng(seed)
  b, t = 3, 12
  lengths = np.array([12, 7, len(HOSTILE)])
  mask = np.arange(t)[None] < lengths[:, None]
  channels = {
      name: np.where(mask, rng.random((b, t)), 0).astype(np.float32)
      for name in SYNTH_CHANNELS
  }
  channels["reverse_kl"][1, 0] = np.nan  # shown as n/a, stored as null
  selectors = {
      name: mask & (rng.random((b, t)) < 0.4) for name in SYNTH_SELECTORS
  }
  pieces = [[f"w{i} " for i in range(n)] for n in lengths[:2]] + [HOSTILE]
  return tm.TokenMap(
      ids=np.where(mask, rng.integers(0, 50, (b, t)), 0).astype(np.int32),
      mask=mask,
      channels=channels,
      selectors=selectors,
      descriptions={
          **{name: name for name in SYNTH_CHANNELS + SYNTH_SELECTORS},
          **tm.DESCRIPTIONS,
          "tip_score": "<i>score</i> & </script>",
      },
      ranges={"tip_score": (0.0, 1.0), "tsd_gate": (0.0, 1.0)},
      pieces=pieces,
      prompts=["Q0 </script>", "Q1 <b>", "Q2"],
      answers=["7", None, "<x>"],
      verdicts=[True, None, False],
      meta={"student": "a&b</script>", "settings.rho": 0.5},
  )


class _Spans(html.parser.HTMLParser):
  """Collects the text of each token span and counts <script> tags."""

  def __init__(self):
    super().__init__()
    self.tokens, self.scripts, self._in = [], 0, False

  def handle_starttag(self, tag, attrs):
    self.scripts += tag == "script"
    if tag == "span" and "tok" in (dict(attrs).get("class") or "").split():
      self._in = True
      self.tokens.append("")

  def handle_endtag(self, tag):
    if tag == "span":
      self._in = False

  def handle_data(self, data):
    if self._in:
      self.tokens[-1] += data


def _embedded_json(page):
  start = page.index('<script type="application/json" id="tm-data">')
  start = page.index(">", start) + 1
  return page[start : page.index("</script>", start)]


def test_page_escapes_token_text():
  token_map = synthetic_map()
  page = token_map_html.render_html(token_map, title="<t> & co")
  parser = _Spans()
  parser.feed(page)
  assert parser.scripts == 2  # the data block and the page's script
  want = [
      p.replace("\n", "\u21b5\n") for rows in token_map.pieces for p in rows
  ]
  assert parser.tokens == want
  assert "<script>alert" not in page and "<b>x" not in page
  assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
  blob = _embedded_json(page)
  assert not set("<>&") & set(blob)
  assert json.loads(blob) == json.loads(token_map.to_json())
  assert "http://" not in page.replace("http://www.apache.org", "") and (
      "https://" not in page
  )


def test_json_round_trip():
  token_map = synthetic_map()
  data = json.loads(token_map.to_json())
  assert data["format"] == tm.FORMAT
  assert data["rollouts"][1]["channels"]["reverse_kl"][0] is None
  assert len(data["rollouts"][2]["tokens"]) == len(HOSTILE)
  back = tm.TokenMap.from_json(token_map.to_json())
  np.testing.assert_array_equal(back.ids, token_map.ids)
  np.testing.assert_array_equal(back.mask, token_map.mask)
  for name, x in token_map.channels.items():
    np.testing.assert_allclose(back.channels[name], x, rtol=1e-6)
  for name, x in token_map.selectors.items():
    np.testing.assert_array_equal(back.selectors[name], x)
  assert (back.pieces, back.prompts, back.answers, back.verdicts) == (
      token_map.pieces,
      token_map.prompts,
      token_map.answers,
      token_map.verdicts,
  )
  assert back.to_json() == token_map.to_json()


def test_a_new_selector_is_one_more_entry():
  token_map = synthetic_map()
  token_map.selectors["topd_candidates"] = token_map.mask.copy()
  token_map.descriptions["topd_candidates"] = "TOPD high-loss candidates"
  page = token_map_html.render_html(token_map)
  assert '<option value="topd_candidates"' in page


def test_bad_shapes_are_rejected():
  token_map = synthetic_map()
  with pytest.raises(ValueError, match="channel 'bad' must have shape"):
    tm.TokenMap(token_map.ids, token_map.mask, {"bad": np.zeros((3, 5))}, {})
  with pytest.raises(ValueError, match=r"pieces\[0\]: expected 12 pieces"):
    tm.TokenMap(token_map.ids, token_map.mask, {}, {}, pieces=[["a"], [], []])


def test_write_token_map_labels_and_writes(pair, tmp_path):
  student, teacher, rollout, _ = pair

  class Tok:

    def decode(self, ids, skip_special_tokens=False):
      del skip_special_tokens
      return "".join(f"<{i}>" for i in ids)

  def grader(texts, answers):
    return [a in t for t, a in zip(texts, answers)]

  first = int(rollout.response[0, 0])
  path = tmp_path / "sub" / "map.html"
  token_map = tm.write_token_map(
      str(path),
      student,
      teacher,
      rollout,
      Tok(),
      answers=[f"<{first}>", None, "nope"],
      grader=grader,
      meta={"step": 7},
      json_path=str(tmp_path / "map.json"),
  )
  assert token_map.verdicts == [True, None, False]
  assert token_map.pieces[2] == [
      f"<{i}>" for i in np.asarray(rollout.response[2, :2])
  ]
  assert token_map.prompts[1].startswith("<")
  page = path.read_text(encoding="utf-8")
  assert "step: 7" in page and page.count('class="tok"') == 17
  assert sorted(p.name for p in tmp_path.iterdir()) == ["map.json", "sub"]
  assert list((tmp_path / "sub").iterdir()) == [path]


def _chromium():
  """The chromium binary; skips (locally) or fails (in CI) without it."""
  path = shutil.which("chromium")
  if path is None:
    message = (
        "chromium is not installed (Debian: apt-get install -y"
        " chromium); .ci/run installs it"
    )
    if os.environ.get("CI") == "true":
      pytest.fail(message)
    pytest.skip(message)
  return path


def _dump_dom(page_path, fragment, profile):
  """The DOM after the page's script ran, and chromium's console lines."""
  cmd = [
      _chromium(),
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      f"--user-data-dir={profile}",
      "--enable-logging=stderr",
      "--v=0",
      "--dump-dom",
      f"file://{page_path}#{fragment}",
  ]
  proc = subprocess.run(
      cmd, capture_output=True, text=True, timeout=120, check=False
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  console = [l for l in proc.stderr.splitlines() if ":CONSOLE" in l]
  return proc.stdout, console


class _Dom(html.parser.HTMLParser):
  """Token spans (text, style, classes), body attributes and scripts."""

  def __init__(self):
    super().__init__()
    self.spans, self.body, self.scripts, self._in = [], {}, 0, False

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    self.scripts += tag == "script"
    if tag == "body":
      self.body = attrs
    if tag == "span" and "tok" in (attrs.get("class") or "").split():
      self._in = True
      self.spans.append({
          "text": "",
          "style": attrs.get("style", ""),
          "class": attrs["class"].split(),
      })

  def handle_endtag(self, tag):
    if tag == "span":
      self._in = False

  def handle_data(self, data):
    if self._in:
      self.spans[-1]["text"] += data


def _render(page_path, fragment, profile):
  dom, console = _dump_dom(page_path, fragment, profile)
  parsed = _Dom()
  parsed.feed(dom)
  return parsed, console, dom


def test_page_in_headless_chromium(tmp_path):
  token_map = synthetic_map()
  page = tmp_path / "map.html"
  page.write_text(token_map_html.render_html(token_map), encoding="utf-8")
  n = int(token_map.mask.sum())
  renders = {}
  for channel, selector in (
      ("student_entropy", ""),
      ("teacher_entropy", "tsd_em"),
  ):
    fragment = f"channel={channel}&selector={selector}"
    dom, console, raw = _render(page, fragment, tmp_path / "profile")
    assert console == [], console
    assert "data-js-errors" not in dom.body, raw[-2000:]
    assert dom.body.get("data-ready") == channel
    assert dom.scripts == 2  # no token became a script element
    assert len(dom.spans) == n
    assert [s["text"] for s in dom.spans[-len(HOSTILE) :]] == [
        p.replace("\n", "\u21b5\n") for p in HOSTILE
    ]
    assert all("background-color: rgb(" in s["style"] for s in dom.spans)
    kept = sum("kept" in s["class"] for s in dom.spans)
    want = int(token_map.selectors[selector].sum()) if selector else 0
    assert kept == want
    renders[channel] = [s["style"] for s in dom.spans]
  a, b = renders["student_entropy"], renders["teacher_entropy"]
  assert sum(x != y for x, y in zip(a, b)) > n // 2


def test_page_reports_script_errors(tmp_path):
  page = token_map_html.render_html(synthetic_map())
  broken = page.replace(_embedded_json(page), "{not json")
  path = tmp_path / "broken.html"
  path.write_text(broken, encoding="utf-8")
  dom, console, _ = _render(path, "", tmp_path / "profile")
  assert dom.body.get("data-js-errors") == "1"
  assert "data-ready" not in dom.body
  assert console  # chromium logs the uncaught error too


def test_hovered_token_shows_its_numbers(tmp_path):
  token_map = synthetic_map()
  page = tmp_path / "map.html"
  page.write_text(token_map_html.render_html(token_map), encoding="utf-8")
  dom, console, raw = _render(
      page, "channel=reverse_kl&hover=1.0", tmp_path / "profile"
  )
  assert console == [] and "data-js-errors" not in dom.body
  tip = raw[raw.index('<div id="tip"') :]
  tip = tip[: tip.index("</table>")]
  assert " hidden" not in tip[: tip.index(">")]
  assert '"w0 "  position 0' in tip
  # Every channel's value of token (1, 0); reverse_kl is NaN there.
  for name, values in token_map.channels.items():
    shown = "n/a" if name == "reverse_kl" else f"{values[1, 0]:.4f}"
    assert f'<td>{name}</td><td class="v">{shown}</td>' in tip, name


def test_topd_selectors_follow_the_stage(pair):
  from opd_jax.methods.topd import TOPD  # pylint: disable=g-import-not-at-top

  student, teacher, rollout, plain = pair
  topd = TOPD(rho_loss=0.5, max_candidates=9, window=3)
  stage = tm.StageSettings(eos_ids=(1,), pad_id=0)
  with pytest.raises(ValueError, match="topd has a pre-update stage"):
    tm.compute_token_map(student, teacher, rollout, method=topd)
  token_map = tm.compute_token_map(
      student, teacher, rollout, method=topd, stage=stage, seed=3
  )
  topd_selectors = ["topd_candidate", "topd_divergent", "topd_false_alarm"]
  assert list(token_map.selectors) == topd_selectors + list(plain.selectors)
  assert (
      list(token_map.channels)
      == list(tm.CHANNELS)
      + ["topd_ot"]
      + list(plain.channels)[len(tm.CHANNELS) :]
  )
  for name in plain.channels:  # the other entries are unchanged
    np.testing.assert_array_equal(
        token_map.channels[name], plain.channels[name]
    )
  mask = token_map.mask
  cand = token_map.selectors["topd_candidate"]
  high = token_map.selectors["topd_divergent"]
  alarm = token_map.selectors["topd_false_alarm"]
  ot = token_map.channels["topd_ot"]
  # The top floor(0.5 L) of each rollout (at most T = 9) by reverse KL are
  # the candidates.
  rkl = token_map.channels["reverse_kl"]
  for b, length in enumerate(mask.sum(axis=1)):
    assert cand[b].sum() == length // 2
    if 0 < length // 2 < length:
      assert rkl[b][cand[b]].min() >= rkl[b][mask[b] & ~cand[b]].max()
  # Divergent and false alarm split the candidates at the 0.8 quantile of
  # the batch's candidate OT (numpy's linear interpolation).
  np.testing.assert_array_equal(high | alarm, cand)
  assert not np.any(high & alarm)
  assert np.all(ot[~cand] == 0) and np.all(ot[cand] > 0)
  np.testing.assert_array_equal(high, cand & (ot > np.quantile(ot[cand], 0.8)))
  assert 0 < high.sum() < cand.sum()
  assert token_map.meta["settings.topd.max_candidates"] == 9
  # Another seed samples other windows: the same candidates.
  other = tm.compute_token_map(
      student, teacher, rollout, method=topd, stage=stage, seed=4
  )
  np.testing.assert_array_equal(other.selectors["topd_candidate"], cand)
  assert not np.array_equal(other.channels["topd_ot"], ot)
  # The stage outputs a step trained on (as the trainer passes them) are
  # shown as they are: no second stage run.
  import jax  # pylint: disable=g-import-not-at-top

  prepared = tm._prepare(  # pylint: disable=protected-access
      student, teacher, rollout, jax.random.PRNGKey(3), method=topd, stage=stage
  )
  given = tm.compute_token_map(
      student, teacher, rollout, method=topd, prepared=prepared, seed=9
  )
  for name in topd_selectors:
    np.testing.assert_array_equal(
        given.selectors[name], token_map.selectors[name], err_msg=name
    )
  np.testing.assert_array_equal(given.channels["topd_ot"], ot)


def _step_inputs(student, teacher, rollout):
  """The StepInputs of `rollout` as the training step forms them."""
  import jax  # pylint: disable=g-import-not-at-top
  from opd_jax.methods import StepInputs  # pylint: disable=g-import-not-at-top
  from opd_jax.models import response_hidden  # pylint: disable=g-import-not-at-top

  t = rollout.response.shape[1]
  return StepInputs(
      student_hidden=response_hidden(student, rollout.tokens, rollout.mask, t),
      student_head=student.head_matrix(),
      teacher_hidden=response_hidden(teacher, rollout.tokens, rollout.mask, t),
      teacher_head=teacher.head_matrix(),
      ids=rollout.response,
      mask=rollout.response_mask,
      sampler_logprobs=rollout.logprobs,
      key=jax.random.PRNGKey(0),
  )


def _trained_sets(name, method, inputs):
  """What the method trains on, by the map's selector name."""
  stats = method.loss_pass.token_stats(inputs)
  if name == "dear":
    parts = method.tokens(inputs, stats)
    return {"dear_decision": parts.decision, "dear_evidence": parts.evidence}
  return {f"tip_{method.selector}": method.select(inputs, stats).weights > 0}


# Runs with non-default selection settings: the map must show the tokens
# the run trains on (it used to recompute them with its own copies of the
# defaults: reverse KL as TIP's axis and DEAR's gap, per-sequence DEAR statistics).
_NON_DEFAULT_RUNS = {
    "tip": {
        "score_divergence": "sampled_logratio",
        "rho": 0.3,
        "loss_pass.temperature": 0.7,
    },
    "dear": {
        "score_divergence": "sampled_logratio",
        "norm_scope": "batch",
        "anchor_causal": True,
        "anchor_window": 2,
        "q": 0.5,
    },
}


@pytest.mark.parametrize("name", sorted(_NON_DEFAULT_RUNS))
def test_the_trainers_map_shows_the_tokens_the_run_trains(pair, tmp_path, name):
  import types  # pylint: disable=g-import-not-at-top
  from opd_jax import methods  # pylint: disable=g-import-not-at-top
  from opd_jax.rollouts import Sampling  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer import loop  # pylint: disable=g-import-not-at-top
  from opd_jax.trainer.config import default_config  # pylint: disable=g-import-not-at-top

  student, teacher, rollout, _ = pair
  c = default_config()
  c.method = name
  for field, value in _NON_DEFAULT_RUNS[name].items():
    *block, leaf = field.split(".")
    setattr(c[name][block[0]] if block else c[name], leaf, value)
  method = methods.build_method(name, c[name].to_dict())
  trainer = types.SimpleNamespace(  # what the trainer's hook reads
      run_config=types.SimpleNamespace(seed=c.seed),
      workdir=str(tmp_path),
      student=lambda: student,
      teacher=teacher,
      _step_teacher=lambda: teacher,
      tokenizer=_ByteTokenizer(),
      grader=None,
      method=method,
      sampling=Sampling(),
      eos_ids=(1,),
      train_data=types.SimpleNamespace(pad_id=0),
  )
  loop.Trainer._write_token_map(trainer, 3, rollout, {}, {})  # pylint: disable=protected-access
  page = (tmp_path / "plots" / "token_map_000003.html").read_text()
  shown = tm.TokenMap.from_json(_embedded_json(page)).selectors
  want = _trained_sets(name, method, _step_inputs(student, teacher, rollout))
  for key, ref in want.items():
    np.testing.assert_array_equal(shown[key], np.asarray(ref), err_msg=key)
