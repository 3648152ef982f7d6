"""Small matplotlib plots (Agg backend, no display) written atomically as PNG."""
from __future__ import annotations

import os

import numpy as np


def save_line_plot(path: str, series: dict, title: str = "", xlabel: str = "", ylabel: str = "",
                   logy: bool = False) -> str:
    """Plot each ``name -> values [n]`` as a line (x = 1..n) and save a PNG at ``path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for name, values in series.items():
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        ax.plot(np.arange(1, values.size + 1), values, marker="o", markersize=3, label=str(name))
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
