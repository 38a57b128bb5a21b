"""Pure rendering of a run as one self-contained HTML page (``run --format html``).

No I/O, no network on the page: styles, the charts (inline SVG) and the table's
filter/sort script are all inline. Per account: a usage bar (now, projected or after,
the ``warn_above`` and ``clean_above`` levels), a chart of what goes (or went) by folder
and rule, the notices, the messages kept as restored, and the message table. The table
filters on any text (``#filter=TEXT`` in the URL pre-fills it) and sorts by a click on a
column head; ``span.shown`` says how many rows are visible.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from retention.report import human_size
from retention.result import AccountResult, RunResult

if TYPE_CHECKING:
    from retention.config.schema import Config

Levels = Mapping[str, tuple[float, float, float]]  # account -> warn, clean, clean_to

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;margin-top:.5em}
th,td{border-bottom:1px solid #eee;padding:.25em .5em;text-align:left;vertical-align:top}
th{cursor:pointer;background:#f4f4f4;user-select:none}th.sorted:after{content:" \\25BE"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.status-error{color:#b00}.status-skipped{color:#a60}.muted{color:#777}input.filter{width:20em;padding:.2em}
svg text{font-size:11px;fill:#222}
"""

_JS = """
(function(){
  function apply(t){
    var q=t.input.value.toLowerCase(),n=0;
    t.rows.forEach(function(r){var hit=!q||r.textContent.toLowerCase().indexOf(q)>=0;
      r.hidden=!hit;if(hit)n++;});
    t.shown.textContent=n+" of "+t.rows.length+" shown";
  }
  document.querySelectorAll("section.account").forEach(function(sec){
    var table=sec.querySelector("table.messages");if(!table)return;
    var body=table.tBodies[0];
    var t={input:sec.querySelector("input.filter"),shown:sec.querySelector("span.shown"),
           rows:Array.prototype.slice.call(body.rows)};
    var m=/[#&]filter=([^&]*)/.exec(location.hash);
    if(m)t.input.value=decodeURIComponent(m[1]);
    t.input.addEventListener("input",function(){apply(t);});
    table.querySelectorAll("th").forEach(function(th,i){
      th.addEventListener("click",function(){
        var asc=th.getAttribute("data-dir")!=="asc";
        table.querySelectorAll("th").forEach(function(h){h.classList.remove("sorted");});
        th.classList.add("sorted");th.setAttribute("data-dir",asc?"asc":"desc");
        var num=th.classList.contains("num");
        t.rows.sort(function(a,b){
          var x=a.cells[i].getAttribute("data-v"),y=b.cells[i].getAttribute("data-v");
          var c=num?(parseFloat(x)-parseFloat(y)):(x<y?-1:x>y?1:0);return asc?c:-c;});
        t.rows.forEach(function(r){body.appendChild(r);});
      });
    });
    apply(t);
  });
  document.body.setAttribute("data-ready","1");
})();
"""


def levels_of(config: Config, names: Iterable[str]) -> dict[str, tuple[float, float, float]]:
    """The quota levels of the accounts named (looked up one by one: a fleet's list is lazy)."""
    out = {}
    for name in names:
        q = config.policy_of(config.account(name)).quota
        out[name] = (q.warn_above, q.clean_above, q.clean_to)
    return out


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(n: int | None, limit: int | None) -> float | None:
    return None if n is None or not limit else 100.0 * n / limit


def usage_bar(acct: AccountResult, levels: tuple[float, float, float] | None,
              dry_run: bool) -> str:
    now = _pct(acct.usage_bytes, acct.limit_bytes)
    after = _pct(acct.usage_after_bytes, acct.limit_bytes)
    if now is None:
        return '<p class="muted usage">usage against a limit unknown</p>'
    w, h = 600, 46

    def x(p: float) -> float:
        return round(min(max(p, 0.0), 110.0) / 110.0 * w, 1)

    word = "projected" if dry_run else "after"
    parts = [f'<svg class="usage-bar" width="{w}" height="{h + 30}" role="img" '
             f'data-now="{now:.1f}" data-after="{after or 0:.1f}" '
             f'aria-label="usage {now:.1f}%, {word} {after or 0:.1f}%">',
             f'<rect x="0" y="0" width="{x(100)}" height="{h}" fill="#eee"/>',
             f'<rect class="now" x="0" y="4" width="{x(now)}" height="18" fill="#d9534f"/>',
             f'<rect class="after" x="0" y="24" width="{x(after or 0)}" height="18" '
             'fill="#5cb85c"/>',
             f'<text x="4" y="17">now {now:.1f}% ({_e(human_size(acct.usage_bytes))})</text>',
             f'<text x="4" y="37">{word} {after or 0:.1f}% '
             f'({_e(human_size(acct.usage_after_bytes))})</text>']
    if levels is not None:
        warn, clean, clean_to = levels
        for name, p, colour in (("warn", warn, "#f0ad4e"), ("clean", clean, "#b00"),
                                ("clean_to", clean_to, "#337ab7")):
            px = x(100 * p)
            parts.append(f'<line class="level-{name}" x1="{px}" x2="{px}" y1="0" y2="{h + 4}" '
                         f'stroke="{colour}" stroke-width="2"/>')
            dy = {"warn": 14, "clean": 26, "clean_to": 14}[name]
            anchor = "end" if name == "clean_to" else "start"
            parts.append(f'<text x="{px}" y="{h + dy}" text-anchor="{anchor}">'
                         f'{name} {100 * p:.0f}%</text>')
    parts.append("</svg>")
    return "".join(parts)


def by_folder_and_rule(acct: AccountResult) -> list[tuple[str, str, int, int]]:
    acc: dict[tuple[str, str], list[int]] = {}
    for r in acct.results:
        if r.result not in ("planned", "done"):
            continue
        key = (r.action.message.folder, r.action.rule)
        t = acc.setdefault(key, [0, 0])
        t[0] += 1
        t[1] += r.action.message.size
    return [(f, rule, c, b) for (f, rule), (c, b) in sorted(acc.items())]


def chart(acct: AccountResult) -> str:
    rows = by_folder_and_rule(acct)
    if not rows:
        return '<p class="muted">nothing goes</p>'
    top = max(b for *_, b in rows) or 1
    bar_h, label_w, w = 20, 260, 600
    parts = [f'<svg class="chart" width="{label_w + w + 160}" height="{bar_h * len(rows) + 4}"'
             ' role="img" aria-label="what goes by folder and rule">']
    for i, (folder, rule, count, size) in enumerate(rows):
        y = i * bar_h + 2
        width = max(1.0, round(size / top * w, 1))
        parts.append(
            f'<g class="bar" data-folder="{_e(folder)}" data-rule="{_e(rule)}" '
            f'data-count="{count}" data-bytes="{size}">'
            f'<text x="0" y="{y + 14}">{_e(folder)} / {_e(rule)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{width}" height="{bar_h - 4}" fill="#337ab7"/>'
            f'<text x="{label_w + width + 4}" y="{y + 14}">{count} msg, '
            f'{_e(human_size(size))}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(acct: AccountResult) -> str:
    heads = [("Result", ""), ("Action", ""), ("Folder", ""), ("UID", "num"),
             ("Received", ""), ("Size", "num"), ("Rule", ""), ("Reason", "")]
    out = ['<p><input class="filter" type="search" placeholder="filter (any text)"> '
           '<span class="shown"></span></p><table class="messages"><thead><tr>']
    out += [f'<th class="{c}">{_e(h)}</th>' for h, c in heads]
    out.append("</tr></thead><tbody>")
    for r in acct.results:
        a, m = r.action, r.action.message
        act = a.kind.value + (f" → {a.to_folder}" if a.to_folder else
                              f" → {a.archive}" if a.archive else "")
        ident = m.uid if m.uid is not None else (m.uidl or "")
        cells = [(r.result, r.result), (act, act), (m.folder, m.folder),
                 (ident, ident if m.uid is not None else 0),
                 (f"{m.received:%Y-%m-%d %H:%M}", m.received.isoformat()),
                 (human_size(m.size), m.size), (a.rule, a.rule),
                 (a.reason + (f" [{r.detail}]" if r.detail else ""), a.reason)]
        tds = "".join(
            f'<td{" class=num" if heads[i][1] else ""} data-v="{_e(v)}">{_e(t)}</td>'
            for i, (t, v) in enumerate(cells)
        )
        out.append(f'<tr data-folder="{_e(m.folder)}" data-rule="{_e(a.rule)}">{tds}</tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _kept(acct: AccountResult) -> str:
    """What stays, per folder and reason; then each kept message when the plan listed them."""
    plan = acct.plan
    if plan is None or not plan.kept:
        return ""
    out = ['<h3>What stays, by folder and reason</h3><table class="kept"><thead><tr>'
           '<th>Folder</th><th>Reason</th><th class="num">Messages</th>'
           '<th class="num">Size</th></tr></thead><tbody>']
    out += [f'<tr data-folder="{_e(t.folder)}" data-reason="{_e(t.reason.value)}">'
            f"<td>{_e(t.folder)}</td><td>{_e(t.reason.text)}</td>"
            f'<td class="num">{t.messages}</td><td class="num">{_e(human_size(t.bytes))}</td>'
            "</tr>" for t in plan.kept]
    out.append("</tbody></table>")
    if plan.kept_messages:
        out.append('<h3>Kept messages</h3><table class="kept-messages"><thead><tr>'
                   "<th>Folder</th><th>ID</th><th>Received</th><th>Size</th><th>Rule</th>"
                   "<th>Reason</th></tr></thead><tbody>")
        for k in plan.kept_messages:
            m = k.message
            ident = m.uid if m.uid is not None else (m.uidl or "")
            out.append(f'<tr data-reason="{_e(k.reason.value)}"><td>{_e(m.folder)}</td>'
                       f"<td>{_e(ident)}</td><td>{m.received:%Y-%m-%d %H:%M}</td>"
                       f"<td>{_e(human_size(m.size))}</td><td>{_e(k.rule or '-')}</td>"
                       f"<td>{_e(k.reason.text)}</td></tr>")
        out.append("</tbody></table>")
    return "".join(out)


def _account(acct: AccountResult, levels: Levels, dry_run: bool) -> str:
    parts = [f'<section class="account" id="account-{_e(acct.account)}" '
             f'data-account="{_e(acct.account)}" data-status="{_e(acct.status)}">',
             f'<h2>{_e(acct.account)} <span class="muted">({_e(acct.protocol)})</span> '
             f'<span class="status-{_e(acct.status)}">{_e(acct.status)}</span></h2>']
    if acct.status == "skipped":
        parts.append(f'<p class="status-skipped">skipped ({_e(acct.skip_reason)}): '
                     f'{_e(acct.error)}</p>')
    elif acct.error:
        parts.append(f'<p class="status-error">{_e(acct.error_kind)}: {_e(acct.error)}</p>')
    parts.append(usage_bar(acct, levels.get(acct.account), dry_run))
    for w in acct.warnings:
        parts.append(f'<p class="warning">warning: {_e(w)}</p>')
    parts.append("<h3>What goes, by folder and rule</h3>" + chart(acct))
    parts.append(_kept(acct))
    plan = acct.plan
    if plan and plan.exempted:
        parts.append('<h3>Kept as restored</h3><ul class="exempted">')
        parts += [f"<li>{_e(m.folder)} UID {_e(m.uid)}: {_e(why)}</li>"
                  for m, why in plan.exempted]
        parts.append("</ul>")
    if acct.notices:
        parts.append('<h3>Notices to the owner</h3><ul class="notices">')
        parts += [f'<li data-kind="{_e(n.kind)}">{_e(n.kind)}: {_e(n.status)} '
                  f'({_e(n.channel)}): <q>{_e(n.subject)}</q></li>' for n in acct.notices]
        parts.append("</ul>")
    parts.append("<h3>Messages</h3>" + _table(acct))
    parts.append("</section>")
    return "".join(parts)


def to_html(run: RunResult, levels: Levels | None = None) -> str:
    levels = levels or {}
    kind = "Dry run (nothing was changed)" if run.dry_run else "Run"
    title = f"retention: {kind} at {run.generated_at:%Y-%m-%d %H:%M:%S %Z}"
    summary = {"accounts": len(run.accounts),
               "failed": sum(1 for a in run.accounts if a.status == "error")}
    body = "".join(_account(a, levels, run.dry_run) for a in run.accounts)
    # The JSON summary is for scripts that scrape the page; "</" cannot end the script.
    data = json.dumps(summary).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f"<p>{summary['accounts']} accounts, {summary['failed']} failed</p>{body}"
        f'<script type="application/json" id="summary">{data}</script>'
        f"<script>{_JS}</script></body></html>\n"
    )
