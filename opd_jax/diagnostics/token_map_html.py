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
"""Renders a `TokenMap` as one self-contained HTML page (inline CSS and JS).

The tokens are written by Python, HTML-escaped, so the text reads without
JavaScript; the numbers travel as the map's JSON in a
``<script type="application/json">`` block whose ``<``, ``>`` and ``&`` are
``\\u``-escaped, so no token text can close it. The page's script colours
the tokens by the chosen channel, outlines the chosen selector's tokens and
shows a token's numbers on hover. The URL hash selects both
(``#channel=teacher_entropy&selector=dear_evidence``) and follows the
controls; ``&hover=B.I`` opens the numbers of token I of rollout B. Script
errors are written into the page (``#js-errors``, and ``data-js-errors`` on
``<body>``); ``data-ready`` on ``<body>`` names the channel drawn once the
page is complete.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from opd_jax.diagnostics.token_map import TokenMap

# Yellow-orange-red, light to dark: dark text stays readable on the low end.
PALETTE = (
    (255, 255, 229),
    (254, 227, 145),
    (254, 153, 41),
    (217, 72, 1),
    (127, 39, 4),
)

_CSS = """
body { font: 14px/1.5 system-ui, sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
h2 { font-size: 1em; margin: .2em 0; font-weight: 600; }
.meta { color: #555; font-size: .85em; }
#controls { position: sticky; top: 0; background: #fff; padding: .5em 0;
  border-bottom: 1px solid #ddd; z-index: 2; }
#controls label { margin-right: 1.5em; }
#legend { display: flex; align-items: center; gap: .6em; flex-wrap: wrap;
  margin-top: .4em; font-size: .85em; }
#bar { width: 220px; height: 12px; border: 1px solid #999;
  background: linear-gradient(to right, PALETTE_STOPS); }
.swatch { display: inline-block; padding: 0 .4em; }
.rollout { border-bottom: 1px solid #eee; padding: .6em 0; }
.verdict { padding: 0 .4em; border-radius: 3px; color: #fff; }
.verdict.ok { background: #1a7f37; }
.verdict.bad { background: #cf222e; }
.verdict.none { background: #888; }
.kept-count { color: #555; font-weight: normal; font-size: .85em; }
details { color: #555; font-size: .85em; }
pre.prompt { white-space: pre-wrap; margin: .2em 0; }
.tokens { font: 16px/2 ui-monospace, monospace; white-space: pre-wrap; }
.tok { padding: 1px 1px; border-right: 1px solid #0001; cursor: default; }
.tok.empty::after { content: "\\2205"; color: #aaa; }
.selecting .tok { opacity: .4; }
.selecting .tok.kept { opacity: 1; outline: 2px solid #0550ae;
  outline-offset: -1px; }
.tok.hover { box-shadow: 0 0 0 2px #000; }
#tip { position: fixed; background: #fff; border: 1px solid #888;
  padding: .4em .6em; font-size: 12px; box-shadow: 2px 2px 6px #0003;
  pointer-events: none; z-index: 3; max-width: 28em; }
#tip table { border-collapse: collapse; }
#tip td { padding: 0 .4em; }
#tip td.v { text-align: right; font-family: ui-monospace, monospace; }
#js-errors { color: #cf222e; }
"""

_JS = r"""
(function () {
  'use strict';
  var body = document.body, errors = 0;
  function fail(message) {
    var box = document.getElementById('js-errors');
    var li = document.createElement('li');
    li.textContent = String(message);
    box.appendChild(li);
    box.hidden = false;
    body.setAttribute('data-js-errors', String(++errors));
  }
  window.addEventListener('error', function (e) {
    fail((e.message || 'error') + ' (line ' + e.lineno + ')');
  });
  var consoleError = console.error;
  console.error = function () {
    fail(Array.prototype.join.call(arguments, ' '));
    consoleError.apply(console, arguments);
  };

  var data = JSON.parse(document.getElementById('tm-data').textContent);
  var palette = JSON.parse(body.getAttribute('data-palette'));
  var channelBox = document.getElementById('channel');
  var selectorBox = document.getElementById('selector');
  var first = data.rollouts.length ? data.rollouts[0] : null;
  var channelNames = first ? Object.keys(first.channels) : [];
  var selectorNames = first ? Object.keys(first.selectors) : [];
  var spans = document.querySelectorAll('.tok');
  var tip = document.getElementById('tip');

  function range(name) {
    if (data.ranges[name]) return data.ranges[name];
    var lo = Infinity, hi = -Infinity;
    data.rollouts.forEach(function (r) {
      r.channels[name].forEach(function (v) {
        if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      });
    });
    return lo <= hi ? [lo, hi] : [0, 1];
  }
  function colour(v, lohi) {
    if (v === null) return [[200, 200, 200], false];
    var x = lohi[1] > lohi[0] ? (v - lohi[0]) / (lohi[1] - lohi[0]) : 0;
    x = Math.min(1, Math.max(0, x)) * (palette.length - 1);
    var i = Math.min(Math.floor(x), palette.length - 2), f = x - i, c = [];
    for (var k = 0; k < 3; k++) {
      var a = palette[i][k], b = palette[i + 1][k];
      c.push(Math.round(a + f * (b - a)));
    }
    return [c, 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 128];
  }
  function fmt(v) {
    if (v === null) return 'n/a';
    return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ?
        v.toExponential(3) : v.toFixed(4);
  }
  function describe(name) { return data.descriptions[name] || name; }

  function draw() {
    var channel = channelBox.value, selector = selectorBox.value;
    var lohi = range(channel), kept = 0, total = 0;
    spans.forEach(function (s) {
      var r = data.rollouts[+s.dataset.b], i = +s.dataset.i;
      var c = colour(r.channels[channel][i], lohi);
      s.style.backgroundColor = 'rgb(' + c[0].join(', ') + ')';
      s.style.color = c[1] ? '#fff' : '#000';
      var on = selector !== '' && r.selectors[selector][i] === 1;
      s.classList.toggle('kept', on);
    });
    document.querySelectorAll('.rollout').forEach(function (sec) {
      var r = data.rollouts[+sec.dataset.b];
      var count = sec.querySelector('.kept-count');
      sec.classList.toggle('selecting', selector !== '');
      if (selector === '') {
        count.textContent = r.ids.length + ' tokens';
        return;
      }
      var k = r.selectors[selector].reduce(function (a, b) {
        return a + b;
      }, 0);
      kept += k; total += r.ids.length;
      count.textContent = k + ' / ' + r.ids.length + ' kept by ' + selector;
    });
    document.getElementById('lo').textContent = fmt(lohi[0]);
    document.getElementById('hi').textContent = fmt(lohi[1]);
    document.getElementById('channel-desc').textContent = describe(channel);
    document.getElementById('selector-desc').textContent = selector === '' ?
        'no selector' : describe(selector) + ': ' + kept + ' / ' + total +
        ' tokens (' + (total ? (100 * kept / total).toFixed(1) : '0') + '%)';
    var hash = 'channel=' + encodeURIComponent(channel) +
        (selector ? '&selector=' + encodeURIComponent(selector) : '');
    if (location.hash.slice(1) !== hash) {
      history.replaceState(null, '', '#' + hash);
    }
    body.setAttribute('data-ready', channel);
  }
  function readHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    var c = params.get('channel'), s = params.get('selector');
    if (c !== null && channelNames.indexOf(c) >= 0) channelBox.value = c;
    if (s !== null && (s === '' || selectorNames.indexOf(s) >= 0)) {
      selectorBox.value = s;
    }
    return params.get('hover');
  }
  function hover(where) {
    // '#...&hover=B.I' shows token I of rollout B as if hovered (screenshots).
    var bi = (where || '').split('.');
    var s = document.querySelector(
        '.tok[data-b="' + (+bi[0]) + '"][data-i="' + (+bi[1]) + '"]');
    if (!s) return;
    var box = s.getBoundingClientRect();
    showTip({target: s, clientX: box.right, clientY: box.bottom});
  }

  function showTip(e) {
    var s = e.target, last = document.querySelector('.tok.hover');
    if (last) last.classList.remove('hover');
    if (!s.classList || !s.classList.contains('tok')) {
      tip.hidden = true;
      return;
    }
    s.classList.add('hover');
    var r = data.rollouts[+s.dataset.b], i = +s.dataset.i;
    tip.textContent = '';
    var head = document.createElement('div');
    head.textContent = JSON.stringify(r.tokens ? r.tokens[i] : '') +
        '  position ' + r.positions[i] + '  id ' + r.ids[i];
    tip.appendChild(head);
    var table = document.createElement('table');
    channelNames.forEach(function (name) {
      var row = table.insertRow(), a = row.insertCell(), b = row.insertCell();
      a.textContent = name;
      b.textContent = fmt(r.channels[name][i]);
      b.className = 'v';
      if (name === channelBox.value) row.style.fontWeight = 'bold';
    });
    tip.appendChild(table);
    var keep = selectorNames.filter(function (n) {
      return r.selectors[n][i] === 1;
    });
    var sel = document.createElement('div');
    sel.textContent = 'kept by: ' + (keep.length ? keep.join(', ') : 'none');
    tip.appendChild(sel);
    tip.hidden = false;
    var x = Math.min(e.clientX + 14, window.innerWidth - tip.offsetWidth - 4);
    var y = e.clientY + 16;
    if (y + tip.offsetHeight > window.innerHeight) {
      y = e.clientY - tip.offsetHeight - 8;
    }
    tip.style.left = x + 'px';
    tip.style.top = Math.max(0, y) + 'px';
  }

  channelBox.addEventListener('change', draw);
  selectorBox.addEventListener('change', draw);
  window.addEventListener('hashchange', function () { readHash(); draw(); });
  document.addEventListener('mouseover', showTip);
  var where = readHash();
  draw();
  if (where) hover(where);
})();
"""


def _esc(text) -> str:
  return html.escape(str(text), quote=True)


def script_json(value) -> str:
  """JSON safe inside a <script> element: no '<', '>' or '&' survive."""
  text = json.dumps(value, ensure_ascii=False, allow_nan=False)
  return (
      text.replace("&", "\\u0026")
      .replace("<", "\\u003c")
      .replace(">", "\\u003e")
      .replace("\u2028", "\\u2028")
      .replace("\u2029", "\\u2029")
  )


def _token_span(b: int, i: int, piece: str) -> str:
  # Newlines show as a visible mark and still break the line.
  shown = piece.replace("\n", "\u21b5\n")
  empty = " empty" if piece == "" else ""
  return (
      f'<span class="tok{empty}" data-b="{b}" data-i="{i}">{_esc(shown)}</span>'
  )


def _verdict(row: dict) -> str:
  verdict, answer = row["verdict"], row["answer"]
  if verdict is None:
    tag = '<span class="verdict none">not graded</span>'
  elif verdict:
    tag = '<span class="verdict ok">\u2713 correct</span>'
  else:
    tag = '<span class="verdict bad">\u2717 wrong</span>'
  if answer is not None:
    tag += f" reference answer: <code>{_esc(answer)}</code>"
  return tag


def _rollout(b: int, row: dict) -> str:
  pieces = row["tokens"] or [f"[{i}]" for i in row["ids"]]
  spans = "".join(_token_span(b, i, p) for i, p in enumerate(pieces))
  prompt = ""
  if row["prompt"] is not None:
    # Short prompts show at once; long ones (real math) fold away.
    fold = " open" if len(row["prompt"]) <= 400 else ""
    prompt = (
        f'<details{fold}><summary>prompt</summary><pre class="prompt">'
        f'{_esc(row["prompt"])}</pre></details>'
    )
  return (
      f'<section class="rollout" data-b="{b}"><h2>rollout {b} '
      f'{_verdict(row)} <span class="kept-count"></span></h2>{prompt}'
      f'<div class="tokens">{spans}</div></section>'
  )


def _options(names, descriptions, default: str | None = None) -> str:
  out = [] if default is None else [f'<option value="">{default}</option>']
  for n in names:
    title = _esc(descriptions.get(n, n))
    out.append(f'<option value="{_esc(n)}" title="{title}">{_esc(n)}</option>')
  return "".join(out)


def _header(data: dict, title: str) -> str:
  rows = data["rollouts"]
  graded = [r["verdict"] for r in rows if r["verdict"] is not None]
  summary = f"{len(rows)} rollouts, {sum(len(r['ids']) for r in rows)} tokens"
  if graded:
    summary += f", {sum(graded)} / {len(graded)} correct"
  settings = {
      k: v for k, v in data["meta"].items() if k.startswith("settings.")
  }
  line = lambda items: " \u00b7 ".join(
      f"{_esc(k)}: {_esc(v)}" for k, v in items
  )
  meta = line((k, v) for k, v in data["meta"].items() if k not in settings)
  if settings:
    meta += (
        "<details><summary>selector settings</summary>"
        f"{line((k[len('settings.'):], v) for k, v in settings.items())}"
        "</details>"
    )
  return (
      f"<header><h1>{_esc(title)}</h1><p>{_esc(summary)}</p>"
      f'<div class="meta">{meta}</div></header>'
  )


def render_html(
    token_map: TokenMap, *, title: str = "opd_jax token map"
) -> str:
  """The page of a token map, as one HTML string with no external resource.

  Args:
    token_map: a TokenMap (labelled or not; without pieces the tokens show
      as their ids).
    title: page title and heading.

  Returns:
    The HTML document.
  """
  data = token_map.to_dict()
  rows = data["rollouts"]
  channels = list(rows[0]["channels"]) if rows else []
  selectors = list(rows[0]["selectors"]) if rows else []
  stops = ", ".join(f"rgb{c}" for c in PALETTE)
  css = _CSS.replace("PALETTE_STOPS", stops)
  desc = data["descriptions"]
  controls = (
      '<div id="controls"><label>colour by <select id="channel">'
      f"{_options(channels, desc)}</select></label>"
      '<label>selector <select id="selector">'
      f'{_options(selectors, desc, "none")}</select></label>'
      '<div id="legend"><span id="lo"></span><span id="bar"></span>'
      '<span id="hi"></span><span id="channel-desc"></span>'
      '<span class="swatch">|</span><span id="selector-desc"></span></div>'
      "</div>"
  )
  return (
      '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
      '<link rel="icon" href="data:,">'
      f"<title>{_esc(title)}</title><style>{css}</style></head>"
      f'<body data-palette="{_esc(json.dumps(PALETTE))}">'
      f"{_header(data, title)}{controls}"
      '<ul id="js-errors" hidden></ul>'
      f'<main>{"".join(_rollout(b, r) for b, r in enumerate(rows))}</main>'
      '<div id="tip" hidden></div>'
      f'<script type="application/json" id="tm-data">{script_json(data)}'
      f"</script><script>{_JS}</script></body></html>\n"
  )
