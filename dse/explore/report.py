"""report.html: one self-contained, interactive page per run (no server, no network).

The page inlines plotly.js from the ``plotly`` pip package (MIT; https://plotly.com/javascript/)
and every figure's data, so it opens offline from the output folder. Sections:

- ``pareto_section``: the Pareto explorer — every kept design (a sample when there are many) and
  the front, with dropdowns that put any numeric column on either axis or the colour, and a hover
  that lists the design's knobs and all its metrics;
- ``roofline_section``: the device's roofline (memory roof ``mem_bw · I`` and one ceiling per
  precision, Williams et al. 2009, CACM 52(4)) with the design's operators at their arithmetic
  intensity and achieved FLOP/s (``flops / time_s``, so efficiencies and overheads show as the gap
  to the roof);
- ``ops_section``: per-operator time (``time_s · count``) of each phase (prefill or encode, decode);
- ``serve_section``: tokens/s per GPU against tokens/s per user and its front (task=serve);
- ``lines_section`` and ``table_section`` for the paper tasks and anything else.

``write_report(path, title, sections)`` writes the page atomically. When every plot has drawn, the
page sets ``data-plots-drawn`` on ``<body>``; any uncaught error or ``console.error`` is counted in
``data-errors`` on ``<html>`` (the test in tests/explore/test_report.py reads both in Chromium).
No Hydra here: dse.app gathers the inputs.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from dse.explore.export import write_text

#: most background points the explorer ships (each carries its hover text)
MAX_POINTS = 4000


@dataclass
class Section:
    title: str
    note: str = ""
    figure: dict | None = None  # a plotly figure as JSON-able {data, layout}
    explorer: dict | None = None  # data of a Pareto explorer
    table: str = ""  # an HTML table


def _plotly_js() -> str:
    """plotly.min.js as shipped in the plotly wheel (read, not imported: importing plotly costs ~0.1 s)."""
    import importlib.util
    spec = importlib.util.find_spec("plotly")
    path = Path(spec.origin).parent / "package_data" / "plotly.min.js" if spec and spec.origin else None
    if path is None or not path.exists():
        raise RuntimeError("report.html needs the plotly package (its bundled plotly.min.js): pip install plotly")
    return path.read_text(encoding="utf-8")


def _clean(v):
    """JSON-safe scalars (NaN/inf -> None, numpy -> Python)."""
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    return v if isinstance(v, (int, str)) or v is None else str(v)


def _columns(df: pd.DataFrame) -> dict[str, list]:
    return {c: [_clean(v) for v in df[c].tolist()] for c in df.columns}


def _fig(data: list[dict], layout: dict) -> dict:
    """A plotly.js figure as plain JSON (plotly.js validates it when it draws)."""
    return {"data": data, "layout": {"margin": {"t": 40}, "hovermode": "closest", **layout}}


def pareto_section(results: pd.DataFrame | None, front: pd.DataFrame, objectives: Sequence[dict], *,
                   title: str = "Pareto explorer", note: str = "") -> Section:
    """Every design (sampled to MAX_POINTS) and the front; axes and colour picked in the page."""
    keys = [o["key"] for o in objectives]
    parts = [front.copy().assign(**{"__front": True})]
    if results is not None and len(results):
        rest = results if len(results) <= MAX_POINTS else results.sample(MAX_POINTS, random_state=0)
        parts.insert(0, rest.assign(**{"__front": False}))
    df = pd.concat(parts, ignore_index=True)
    numeric = [c for c in df.columns if c != "__front" and pd.api.types.is_numeric_dtype(df[c])
               and not pd.api.types.is_bool_dtype(df[c]) and df[c].nunique(dropna=True) > 1]
    axes = list(dict.fromkeys([k for k in keys if k in numeric] + numeric))
    hover = [c for c in df.columns if c != "__front" and not c.startswith("meta.")
             and (df[c].nunique(dropna=False) > 1 or c in keys or not c.startswith(("model.", "hardware.")))]
    x0 = axes[1] if len(axes) > 1 else axes[0] if axes else None
    y0 = axes[0] if axes else None
    dirs = {o["key"]: o["dir"] for o in objectives}
    explorer = {"columns": _columns(df[hover + [c for c in axes if c not in hover]]), "front": df["__front"].tolist(),
                "axes": axes, "hover": hover, "x": x0, "y": y0, "color": axes[2] if len(axes) > 2 else "",
                "dirs": dirs}
    n_all = len(results) if results is not None else len(front)
    note = note or (f"{len(front):,} designs on the front ({', '.join(f'{d} {k}' for k, d in dirs.items())}) "
                    f"of {n_all:,}" + (f" (grey: a sample of {MAX_POINTS:,})" if n_all > MAX_POINTS else ""))
    return Section(title, note, explorer=explorer)


def roofline_section(ops: pd.DataFrame, peaks: dict[str, float], mem_bw: float, *, device: str = "",
                     title: str = "Roofline", note: str = "") -> Section:
    """The device's roofline and the operators of each phase (one point per operator)."""
    ops = ops[(ops.flops > 0) & (ops.bytes > 0) & (ops.time_s > 0)]
    intensity = ops.flops / ops.bytes
    lo = max(min(float(intensity.min()) / 4, 0.1), 1e-3) if len(ops) else 0.1
    top = max(peaks.values()) if peaks else 1.0
    hi = max(float(intensity.max()) * 4 if len(ops) else 1e4, 4 * top / mem_bw)
    x = np.geomspace(lo, hi, 200)
    data = []
    for name, peak in sorted(peaks.items(), key=lambda kv: -kv[1]):
        if peak > 0:
            data.append({"type": "scatter", "mode": "lines", "x": x.tolist(), "y": np.minimum(peak, mem_bw * x).tolist(),
                         "name": f"roof {name} ({peak / 1e12:.4g} TFLOP/s, ridge {peak / mem_bw:.3g} FLOP/B)",
                         "hoverinfo": "name", "line": {"width": 1.5}})
    for phase, g in ops.groupby("phase", sort=False):
        total = (g.time_s * g["count"]).sum()
        text = [f"<b>{r.op}</b> ({phase})<br>FLOPs {r.flops:.4g} · bytes {r.bytes:.4g}<br>"
                f"intensity {r.flops / r.bytes:.4g} FLOP/B<br>achieved {r.flops / r.time_s:.4g} FLOP/s<br>"
                f"time {r.time_s:.4g} s × {r.count:g} = {100 * r.time_s * r.count / total:.1f}% of the phase<br>"
                f"bound: {r.bound}" for r in g.itertuples()]
        size = (6 + 30 * np.sqrt(g.time_s * g["count"] / total)).tolist()
        data.append({"type": "scatter", "mode": "markers", "x": (g.flops / g.bytes).tolist(),
                     "y": (g.flops / g.time_s).tolist(), "name": f"{phase} operators", "text": text,
                     "hoverinfo": "text", "marker": {"size": size, "opacity": 0.75}})
    layout = {"xaxis": {"type": "log", "title": {"text": "arithmetic intensity (FLOP/byte)"}},
              "yaxis": {"type": "log", "title": {"text": "FLOP/s"}}, "height": 520,
              "title": {"text": f"{device} roofline" if device else "roofline"}}
    return Section(title, note or f"memory roof {mem_bw / 1e9:.4g} GB/s; marker area ∝ share of the phase's time",
                   figure=_fig(data, layout))


def ops_section(ops: pd.DataFrame, *, title: str = "Time per operator", note: str = "") -> Section:
    """Per-operator time of each phase (one panel per phase), with the bound in the hover."""
    phases = [p for p in ops.phase.unique() if (ops[ops.phase == p].time_s > 0).any()]
    data, layout, gap = [], {}, 0.08
    width = (1 - gap * (len(phases) - 1)) / max(len(phases), 1)
    for i, p in enumerate(phases):
        g = ops[ops.phase == p].assign(total=lambda d: d.time_s * d["count"]).sort_values("total")
        share = 100 * g.total / g.total.sum()
        ax = "" if i == 0 else str(i + 1)
        data.append({"type": "bar", "orientation": "h", "x": g.total.tolist(), "y": g.op.tolist(), "name": p,
                     "xaxis": f"x{ax}", "yaxis": f"y{ax}", "showlegend": False,
                     "text": [f"{v:.1f}%" for v in share], "textposition": "auto", "hoverinfo": "text",
                     "hovertext": [f"{r.op}: {r.total:.4g} s ({v:.1f}%), {r.bound}-bound<br>compute {r.compute_s:.3g} s, "
                                   f"memory {r.memory_s:.3g} s per occurrence × {r.count:g}"
                                   for r, v in zip(g.itertuples(), share)]})
        lo = i * (width + gap)
        layout[f"xaxis{ax}"] = {"domain": [lo, lo + width], "anchor": f"y{ax}",
                                "title": {"text": f"{p}: seconds per step (total {g.total.sum():.4g} s)"}}
        layout[f"yaxis{ax}"] = {"anchor": f"x{ax}", "automargin": True}
    layout["height"] = max(360, 22 * ops.op.nunique() + 120)
    return Section(title, note or "one step of each phase, all layers (time × count per step)",
                   figure=_fig(data, layout))


def serve_section(df: pd.DataFrame, *, x: str = "tokens_per_s_per_user", y: str = "tokens_per_s_per_gpu",
                  title: str = "Throughput per GPU vs per user", note: str = "") -> Section:
    """task=serve: tokens/s per GPU against tokens/s per user, and the front of the two (both max)."""
    from dse.explore.pareto import pareto_front
    objectives = [{"key": y, "dir": "max"}, {"key": x, "dir": "max"}]
    front = pareto_front(df, objectives, fits_only="fits_memory" in df.columns)
    s = pareto_section(df, front, objectives, title=title, note=note)
    s.explorer.update(x=x, y=y)
    return s


def lines_section(df: pd.DataFrame, x: str, y: str, *, color: str | None = None, title: str = "",
                  log_x: bool = False, log_y: bool = False, note: str = "") -> Section:
    """One line per value of ``color`` (or one line), every column in the hover."""
    data = []
    groups = df.groupby(color, sort=False) if color else [(y, df)]
    for name, g in groups:
        text = ["<br>".join(f"{c}: {_fmt(v)}" for c, v in r.items()) for r in g.to_dict("records")]
        data.append({"type": "scatter", "mode": "lines+markers", "x": [_clean(v) for v in g[x]],
                     "y": [_clean(v) for v in g[y]], "name": str(name), "text": text, "hoverinfo": "text"})
    layout = {"xaxis": {"title": {"text": x}, "type": "log" if log_x else "linear"},
              "yaxis": {"title": {"text": y}, "type": "log" if log_y else "linear"}, "height": 420}
    return Section(title or y, note, figure=_fig(data, layout))


def table_section(df: pd.DataFrame, *, title: str, note: str = "", max_rows: int = 200) -> Section:
    shown = df.head(max_rows)
    body = shown.to_html(index=False, border=0, classes="tbl", float_format=lambda v: f"{v:.4g}", escape=True)
    more = f"<p class='note'>first {max_rows:,} of {len(df):,} rows</p>" if len(df) > max_rows else ""
    return Section(title, note, table=body + more)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}.note{color:#555;font-size:.9em}
.tbl{border-collapse:collapse;font-size:.85em}.tbl td,.tbl th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}
.ctl{margin:.4em 0}.ctl select{margin-right:1em}"""

_ERRORS = """<script>(function(){var n=0;function mark(){n+=1;document.documentElement.setAttribute('data-errors',String(n));}
window.addEventListener('error',mark,true);window.addEventListener('unhandledrejection',mark);
var ce=console.error;console.error=function(){mark();return ce.apply(console,arguments);};})();</script>"""

_EXPLORER = """function dseExplorer(id, E){
  var cols=E.columns, n=E.front.length, opts=E.axes;
  function fmt(v){return (typeof v==='number')? (Number.isInteger(v)? String(v): v.toPrecision(4)) : String(v);}
  var text=[]; for(var i=0;i<n;i++){var t=[];E.hover.forEach(function(c){t.push(c+': '+fmt(cols[c][i]));});text.push(t.join('<br>'));}
  var ctl=document.getElementById(id+'-ctl');
  function sel(label,val,blank){var s=document.createElement('select');s.id=id+'-'+label;
    if(blank){var o=document.createElement('option');o.value='';o.text='(none)';s.appendChild(o);}
    opts.forEach(function(c){var o=document.createElement('option');o.value=c;o.text=c+(E.dirs[c]?' ('+E.dirs[c]+')':'');s.appendChild(o);});
    s.value=val;var l=document.createElement('label');l.textContent=label+' ';l.appendChild(s);ctl.appendChild(l);return s;}
  var sx=sel('x',E.x,false), sy=sel('y',E.y,false), sc=sel('colour',E.color,true);
  var lx=document.createElement('label');lx.innerHTML='<input type=checkbox id='+id+'-logx> log x ';ctl.appendChild(lx);
  var ly=document.createElement('label');ly.innerHTML='<input type=checkbox id='+id+'-logy> log y';ctl.appendChild(ly);
  function pick(mask,c){var o=[];for(var i=0;i<n;i++){if(E.front[i]===mask)o.push(c===null?text[i]:cols[c][i]);}return o;}
  function traces(){var x=sx.value,y=sy.value,c=sc.value;
    var bg={type:'scatter',mode:'markers',name:'designs',x:pick(false,x),y:pick(false,y),text:pick(false,null),hoverinfo:'text',
      marker:{color:'rgba(150,150,150,0.45)',size:5}};
    var fr={type:'scatter',mode:'markers',name:'Pareto front',x:pick(true,x),y:pick(true,y),text:pick(true,null),hoverinfo:'text',
      marker:{size:9,line:{width:1,color:'#222'}}};
    if(c){fr.marker.color=pick(true,c);fr.marker.colorscale='Viridis';fr.marker.showscale=true;fr.marker.colorbar={title:{text:c}};}
    return [bg,fr];}
  function layout(){return {height:560,margin:{t:30},hovermode:'closest',
    xaxis:{title:{text:sx.value},type:document.getElementById(id+'-logx').checked?'log':'linear'},
    yaxis:{title:{text:sy.value},type:document.getElementById(id+'-logy').checked?'log':'linear'}};}
  [sx,sy,sc,document.getElementById(id+'-logx'),document.getElementById(id+'-logy')].forEach(function(s){
    s.addEventListener('change',function(){Plotly.react(id,traces(),layout());});});
  return Plotly.newPlot(id,traces(),layout(),{responsive:true,displaylogo:false});
}
function dseSelfTest(){
  /* report.html?selftest: every explorer puts its last column on x, and the page records whether the plot followed */
  var sels=document.querySelectorAll('select[id$="-x"]'), jobs=[], ok=0;
  sels.forEach(function(s){var id=s.id.slice(0,-2);s.value=s.options[s.options.length-1].value;
    s.dispatchEvent(new Event('change'));
    jobs.push(new Promise(function(res){setTimeout(function(){var gd=document.getElementById(id);
      if(gd.layout.xaxis.title.text===s.value&&gd.data[1].x.length>0)ok+=1;res();},200);}));});
  Promise.all(jobs).then(function(){document.body.setAttribute('data-selftest',ok+'/'+sels.length);});
}"""


def _json(obj) -> str:
    """JSON for an inline script ("</" escaped so no string can close the script)."""
    return json.dumps(obj, allow_nan=False).replace("</", "<\\/")


def render(title: str, sections: Sequence[Section], *, subtitle: str = "") -> str:
    """The whole page as one string."""
    body, calls = [], []
    for i, s in enumerate(sections):
        sid = f"s{i}"
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.note:
            body.append(f"<p class='note'>{html.escape(s.note)}</p>")
        if s.explorer is not None:
            body.append(f"<div class='ctl' id='{sid}-ctl'></div><div id='{sid}'></div>")
            calls.append(f"dseExplorer('{sid}', {_json(s.explorer)})")
        elif s.figure is not None:
            body.append(f"<div id='{sid}'></div>")
            fig = _json(s.figure)
            calls.append(f"(function(f){{return Plotly.newPlot('{sid}', f.data, f.layout, "
                         f"{{responsive:true,displaylogo:false}});}})({fig})")
        if s.table:
            body.append(s.table)
    script = (f"<script>{_EXPLORER}\nPromise.all([{','.join(calls)}]).then(function(){{"
              f"document.body.setAttribute('data-plots-drawn','{len(calls)}');"
              f"if(location.search.indexOf('selftest')>=0)dseSelfTest();}});</script>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>" + _ERRORS +
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
            f"<script>{_plotly_js()}</script></head><body data-plots-expected='{len(calls)}'>"
            f"<h1>{html.escape(title)}</h1>" + (f"<p class='note'>{html.escape(subtitle)}</p>" if subtitle else "")
            + "\n".join(body) + script + "</body></html>")


def write_report(path, title: str, sections: Sequence[Section], *, subtitle: str = "") -> Path:
    """Write report.html atomically; returns its path."""
    path = Path(path)
    write_text(path, render(title, [s for s in sections if s is not None], subtitle=subtitle))
    return path
