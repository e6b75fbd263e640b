"""Terminal tables and the self-contained HTML report of ``chatstream eval`` / ``eval compare``.

Plots are rendered with matplotlib (Agg backend) to inline SVG: the report is one file with no
script, no CDN and no network access, so it can be mailed or attached to a ticket.
"""

from __future__ import annotations

import html
import io
import math
from collections import Counter

from streams.evaluation.compare import Comparison
from streams.pipeline import STAGES


def timing_legend() -> str:
    """What each row of the delay table measures, read from the pipeline table."""
    items = []
    for s in STAGES:
        if s.parts:  # shown by its parts (generate: the LLM call)
            items += [f"{part} = the {part} part of {s.name} ({s.about})" for part in s.parts]
        else:
            items.append(f"{s.name} = {s.about}")
    return "; ".join(items)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) or "-"
    return str(value)


def summary_text(name: str, summary: dict[str, object]) -> str:
    width = max(len(k) for k in summary)
    lines = [f"run {name}"]
    lines += [f"  {k:<{width}}  {_fmt(v)}" for k, v in summary.items()]
    return "\n".join(lines)


def comparison_text(c: Comparison) -> str:
    lines = [
        f"compare A={c.name_a}  B={c.name_b}: {len(c.pairs)} paired turns "
        f"(only in A {c.only_a}, only in B {c.only_b}); 95 % paired bootstrap CI of mean(B - A)",
        f"  {'metric':<22} {'n':>4} {'A':>10} {'B':>10} {'B-A':>10} {'rel':>7}  {'95% CI':<23} verdict",
    ]
    for m in c.metrics:
        rel = f"{100 * m.relative:+.0f}%" if m.relative is not None else "-"
        ci = f"[{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]"
        lines.append(
            f"  {m.name:<22} {m.n:>4} {_fmt(m.mean_a):>10} {_fmt(m.mean_b):>10} {_fmt(m.diff):>10} {rel:>7}  {ci:<23} {m.verdict}"
        )
    lines.append("  per-question answer quality: " + ", ".join(f"{k} {v}" for k, v in c.wins.most_common()))
    lines.append("which question clusters fail most (B; failure rate A -> B):")
    for name, n, fa, fb in c.clusters[:6]:
        lines.append(f"  {name:<32} n={n:<3} {100 * fa:5.0f}% -> {100 * fb:5.0f}%")
    lines.append("which integrations add most delay (ms, p50/p95, A -> B):")
    for stage, a50, a95, b50, b95 in c.stages:
        lines.append(f"  {stage:<12} {_fmt(a50):>7}/{_fmt(a95):<7} -> {_fmt(b50):>7}/{_fmt(b95):<7}")
    lines.append("which knowledge sources underperform (B: cited, groundedness, thumbs down, cited where not relevant):")
    for doc, cited, grounded, down, wrong in c.sources[:6]:
        lines.append(f"  {doc:<32} cited {cited:<3} groundedness {grounded:.2f}  thumbs-down {down}  wrong {wrong}")
    return "\n".join(lines)


def _svg(fig) -> str:  # type: ignore[no-untyped-def]
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.find("<svg"):]


def _plots(c: Comparison) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"
    a = [ra for ra, _ in c.pairs]
    b = [rb for _, rb in c.pairs]
    plots = {}

    fig, ax = plt.subplots(figsize=(6.5, 3))
    lat_a = [r.latency_ms for r in a if r.latency_ms is not None]
    lat_b = [r.latency_ms for r in b if r.latency_ms is not None]
    if lat_a or lat_b:
        ax.boxplot([lat_a or [0], lat_b or [0]], orientation="horizontal", tick_labels=[c.name_a, c.name_b], showfliers=True)
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_title("Latency distribution")
    plots["latency"] = _svg(fig)

    fig, ax = plt.subplots(figsize=(6.5, 3))
    tok_a = [r.prompt_tokens + r.completion_tokens for r in a]
    tok_b = [r.prompt_tokens + r.completion_tokens for r in b]
    bins = 20
    ax.hist([tok_a, tok_b], bins=bins, label=[c.name_a, c.name_b])
    ax.set_xlabel("tokens per turn (prompt + completion)")
    ax.set_ylabel("turns")
    ax.legend()
    ax.set_title("Tokens per turn")
    plots["tokens"] = _svg(fig)

    fig, ax = plt.subplots(figsize=(6.5, 3))
    sa, sb = Counter(r.status for r in a), Counter(r.status for r in b)
    statuses = sorted(set(sa) | set(sb))
    xs = range(len(statuses))
    ax.bar([x - 0.2 for x in xs], [sa[s] for s in statuses], width=0.4, label=c.name_a)
    ax.bar([x + 0.2 for x in xs], [sb[s] for s in statuses], width=0.4, label=c.name_b)
    ax.set_xticks(list(xs), statuses)
    ax.set_ylabel("turns")
    ax.legend()
    ax.set_title("Status mix")
    plots["status"] = _svg(fig)

    fig, ax = plt.subplots(figsize=(6.5, 2.2))
    keys = ["A wins", "tie", "B wins", "unlabelled"]
    ax.barh(keys, [c.wins.get(k, 0) for k in keys], color=["#c0392b", "#95a5a6", "#27ae60", "#bdc3c7"])
    ax.set_xlabel("questions")
    ax.set_title("Per-question wins / losses on answer quality (labelled questions)")
    plots["wins"] = _svg(fig)
    return plots


def comparison_html(c: Comparison, summary_a: dict, summary_b: dict) -> str:
    plots = _plots(c)
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(m.name)}</td><td>{m.n}</td><td>{_fmt(m.mean_a)}</td><td>{_fmt(m.mean_b)}</td>"
        f"<td>{_fmt(m.diff)}</td><td>{'' if m.relative is None else f'{100 * m.relative:+.0f}%'}</td>"
        f"<td>[{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]</td><td class='{m.verdict.split()[1] if m.verdict.startswith('B ') else 'same'}'>"
        f"{esc(m.verdict)}</td></tr>"
        for m in c.metrics
    )
    keys = sorted(set(summary_a) | set(summary_b))
    summary_rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(_fmt(summary_a.get(k, '-')))}</td><td>{esc(_fmt(summary_b.get(k, '-')))}</td></tr>"
        for k in keys
    )
    changed = "".join(
        f"<tr><td>{esc(ra.question)}<br><small>{esc(ra.message_id)} · change {d:.2f}</small></td>"
        f"<td><b>{esc(ra.status or '')}</b> {esc(ra.answer)}</td><td><b>{esc(rb.status or '')}</b> {esc(rb.answer)}</td></tr>"
        for d, ra, rb in c.changed
    )
    clusters = "".join(
        f"<tr><td>{esc(n)}</td><td>{k}</td><td>{100 * fa:.0f}%</td><td>{100 * fb:.0f}%</td></tr>" for n, k, fa, fb in c.clusters
    )
    stages = "".join(
        f"<tr><td>{esc(s)}</td><td>{_fmt(a50)}</td><td>{_fmt(a95)}</td><td>{_fmt(b50)}</td><td>{_fmt(b95)}</td></tr>"
        for s, a50, a95, b50, b95 in c.stages
    )
    sources = "".join(
        f"<tr><td>{esc(d)}</td><td>{n}</td><td>{g:.2f}</td><td>{down}</td><td>{wrong}</td></tr>" for d, n, g, down, wrong in c.sources
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chatstream eval compare {esc(c.name_a)} vs {esc(c.name_b)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}}
table{{border-collapse:collapse;margin:1em 0}} td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:14px}}
th{{background:#f3f3f3}} .better{{color:#1e8449;font-weight:bold}} .worse{{color:#c0392b;font-weight:bold}} .same{{color:#777}}
.plots{{display:flex;flex-wrap:wrap;gap:1em}} .plots div{{flex:1 1 480px}} svg{{max-width:100%;height:auto}}
</style></head><body>
<h1>Run comparison: A = {esc(c.name_a)}, B = {esc(c.name_b)}</h1>
<p>{len(c.pairs)} turns paired by message id (only in A: {c.only_a}, only in B: {c.only_b}). Verdicts use a 95 % paired
bootstrap confidence interval of the mean per-turn difference B − A; "no significant difference" when it contains 0.</p>
<h2>Verdict per metric</h2>
<table><tr><th>metric</th><th>n</th><th>A</th><th>B</th><th>B − A</th><th>relative</th><th>95 % CI</th><th>verdict</th></tr>{rows}</table>
<h2>Plots</h2>
<div class="plots"><div>{plots['latency']}</div><div>{plots['tokens']}</div><div>{plots['status']}</div><div>{plots['wins']}</div></div>
<h2>Which question clusters fail most often</h2>
<p>Cluster = the labelled article of the question (or the top retrieved one without labels); failure = not answered with a relevant
citation (answerable) or answered anyway (not covered).</p>
<table><tr><th>cluster</th><th>questions</th><th>failure A</th><th>failure B</th></tr>{clusters}</table>
<h2>Which integrations add the most delay</h2>
<p>Per-stage processing time from the replies' <code>stage_ms</code>: {esc(timing_legend())};
kafka+queue = end-to-end minus stage processing (hops, consumer waits, in-flight queues).</p>
<table><tr><th>integration</th><th>A p50 ms</th><th>A p95 ms</th><th>B p50 ms</th><th>B p95 ms</th></tr>{stages}</table>
<h2>Which knowledge sources underperform (run B)</h2>
<table><tr><th>document</th><th>cited</th><th>mean groundedness</th><th>thumbs down</th><th>cited where not relevant</th></tr>{sources}</table>
<h2>Answers that changed most</h2>
<table><tr><th>question</th><th>A</th><th>B</th></tr>{changed}</table>
<h2>Run summaries</h2>
<table><tr><th>figure</th><th>A</th><th>B</th></tr>{summary_rows}</table>
</body></html>
"""
