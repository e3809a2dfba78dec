"""The result of ``qk.compare``: one row per method (the float baseline first), shown as a text
table in a terminal and HTML in a notebook; exported to pandas, JSON and a quality-vs-size plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from quantkit.errors import QuantkitError
from quantkit.saving import write_text_atomically
from quantkit.table import Table

# Row key -> column label; the order is the table's.
COLUMNS = {
    "method": "method",
    "bits_per_weight": "bits/weight",
    "size_mb": "size MB",
    "size_ratio": "size vs float",
    "memory_mb": "memory MB",
    "quantize_s": "quantize s",
    "load_s": "load s",
    "perplexity": "perplexity",
    "ppl_change_pct": "ppl change %",
    "kl": "KL",
    "top1": "top-1 agree",
    "prefill_ms_per_token": "prefill ms/tok",
    "decode_tokens_per_s": "decode tok/s",
    "peak_mb": "peak MB",
    "quantize_peak_mb": "quantize peak MB",
    "error": "error",
}
# Which row keys each metric name fills.
METRIC_KEYS = {
    "size": ("bits_per_weight", "size_mb", "size_ratio", "memory_mb"),
    "quantize_time": ("quantize_s",),
    "load_time": ("load_s",),
    "perplexity": ("perplexity", "ppl_change_pct"),
    "kl": ("kl", "top1"),
    "latency": ("prefill_ms_per_token", "decode_tokens_per_s"),
    "peak_memory": ("peak_mb", "quantize_peak_mb"),
}
PLOT_AXES = ("bits_per_weight", "size_mb", "size_ratio", "memory_mb", "perplexity", "ppl_change_pct", "kl",
             "top1", "prefill_ms_per_token", "decode_tokens_per_s", "peak_mb", "quantize_s", "load_s")


class Report:
    """Rows of measurements (``rows``: dicts keyed as ``COLUMNS``) and how they were taken (``meta``)."""

    def __init__(self, rows: list[dict[str, Any]], meta: dict[str, Any] | None = None,
                 metrics: tuple[str, ...] = tuple(METRIC_KEYS)):
        self.rows = rows
        self.meta = dict(meta or {})
        self.metrics = tuple(metrics)

    # -- access -------------------------------------------------------------------------------
    @property
    def baseline(self) -> dict[str, Any]:
        """The float model's row."""
        return self.rows[0]

    @property
    def methods(self) -> list[str]:
        return [r["method"] for r in self.rows[1:]]

    def __getitem__(self, method: str) -> dict[str, Any]:
        for row in self.rows:
            if row["method"] == method:
                return row
        raise KeyError(f"no row {method!r} in this report; its rows are {[r['method'] for r in self.rows]}")

    def __len__(self) -> int:
        return len(self.rows)

    def failed(self) -> dict[str, str]:
        """{method: error} for every method that did not complete."""
        return {r["method"]: r["error"] for r in self.rows if r.get("error")}

    # -- display ------------------------------------------------------------------------------
    def columns(self) -> list[str]:
        keys = ["method"] + [k for m in self.metrics for k in METRIC_KEYS[m]]
        if self.failed():
            keys.append("error")
        return [k for k in COLUMNS if k in keys]

    def table(self, error_width: int | None = 80) -> Table:
        keys = self.columns()
        rows = []
        for row in self.rows:
            shown = {COLUMNS[k]: row.get(k) for k in keys}
            if error_width and row.get("error"):
                shown["error"] = _shorten(row["error"], error_width)
            rows.append(shown)
        return Table(rows, [COLUMNS[k] for k in keys], title=self.title())

    def title(self) -> str:
        meta = self.meta
        parts = [f"quantkit compare: {meta.get('model', '?')}"]
        if meta.get("eval_tokens"):
            parts.append(f"{meta['eval_tokens']} eval tokens ({meta.get('eval_text', 'text')})")
        if meta.get("device"):
            parts.append(f"on {meta['device']}")
        return ", ".join(parts)

    def to_text(self) -> str:
        return self.table().to_text()

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return self.table(error_width=None)._repr_html_()

    # -- export -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "metrics": list(self.metrics), "rows": self.rows}

    def to_json(self, path: str | Path | None = None) -> str:
        """The report as JSON; with ``path``, also written there (atomically, replacing a file)."""
        text = json.dumps(self.to_dict(), indent=2, default=str) + "\n"
        if path is not None:
            write_text_atomically(Path(path), text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> Report:
        """A report written by ``to_json`` (a path to the file, or the JSON text)."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(source)
            if not path.is_file():
                raise QuantkitError(f"{text!r} is not a report file; write one with report.to_json(path).")
            text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
            return cls(data["rows"], data.get("meta"), tuple(data.get("metrics", METRIC_KEYS)))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise QuantkitError(f"not a quantkit compare report ({exc}); write one with report.to_json().") \
                from exc

    def to_pandas(self):
        """A pandas DataFrame indexed by method, one column per row key (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise QuantkitError('report.to_pandas() needs pandas: pip install "quantkit[report]"') from exc
        keys = [k for k in COLUMNS if any(k in r for r in self.rows)]
        return pd.DataFrame([{k: r.get(k) for k in keys} for r in self.rows]).set_index("method")

    def plot(self, x: str = "bits_per_weight", y: str = "perplexity", ax=None,
             path: str | Path | None = None):
        """Scatter ``y`` (quality) against ``x`` (size), one labelled point per method that completed;
        the float baseline drawn as a dashed line. Returns the matplotlib Axes; ``path`` saves a PNG."""
        for axis in (x, y):
            if axis not in PLOT_AXES:
                raise QuantkitError(f"cannot plot {axis!r}; choose from {', '.join(PLOT_AXES)}.")
        try:
            import matplotlib

            if ax is None and path is not None:
                matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise QuantkitError('report.plot() needs matplotlib: pip install "quantkit[report]"') from exc
        points = [r for r in self.rows[1:] if r.get(x) is not None and r.get(y) is not None]
        if not points:
            raise QuantkitError(f"no method has both {x} and {y}; were those metrics measured?")
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5))
        ax.scatter([r[x] for r in points], [r[y] for r in points])
        for r in points:
            ax.annotate(r["method"], (r[x], r[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if self.baseline.get(y) is not None:
            ax.axhline(self.baseline[y], linestyle="--", color="grey", label=f"float: {self.baseline[y]:.4g}")
            ax.legend()
        ax.set_xlabel(COLUMNS[x])
        ax.set_ylabel(COLUMNS[y])
        ax.set_title(self.meta.get("model", "quantkit compare"))
        if path is not None:
            ax.figure.savefig(path, dpi=120, bbox_inches="tight")
        return ax


def _shorten(text: str, width: int) -> str:
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= width else first[: width - 3] + "..."
