"""PNG plots of `medllm evaluate-pipeline` results (matplotlib, headless).

- `ner_prf.png`: per-label precision / recall / F1 bars of each pipeline's NER, per data set;
- `linker_recall_at_k.png`: the linker's recall@k on gold mentions against k, per label.
"""
from pathlib import Path
from typing import Dict, List, Union


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display, no network: files only
    import matplotlib.pyplot as plt

    return plt


def plot_ner(results: Dict[str, dict], path: Union[str, Path]) -> bool:
    rows = [(f"{name}\n{ds}", d["ner"]) for name, res in results.items() for ds, d in res["datasets"].items() if d.get("ner")]
    if not rows:
        return False
    plt = _pyplot()
    labels = sorted({label for _, ner in rows for label in ner["per_label"]})
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.6), squeeze=False, sharey=True)
    for ax, (title, ner) in zip(axes[0], rows):
        width = 0.26
        for i, (metric, name) in enumerate((("p", "precision"), ("r", "recall"), ("f", "F1"))):
            values = [ner["per_label"].get(label, {}).get(metric, 0.0) for label in labels] + [ner[metric]]
            xs = [j + (i - 1) * width for j in range(len(labels) + 1)]
            bars = ax.bar(xs, values, width, label=name)
            ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
        ax.set_xticks(range(len(labels) + 1), labels + ["overall"])
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 105)
    axes[0][0].set_ylabel("%")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_recall_at_k(results: Dict[str, dict], path: Union[str, Path]) -> bool:
    curves = []
    for name, res in results.items():
        for ds, d in res["datasets"].items():
            gold = (d.get("linker") or {}).get("gold_mentions")
            if not gold:
                continue
            for label, scores in gold.items():
                ks = sorted(int(k.split("@")[1]) for k in scores if k.startswith("recall@"))
                curves.append((f"{name} {ds} {label}", ks, [scores[f"recall@{k}"] for k in ks]))
    if not curves:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, ks, values in curves:
        ax.plot(ks, values, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xticks(curves[0][1], [str(k) for k in curves[0][1]])
    ax.set_xlabel("k (candidates)")
    ax.set_ylabel("recall@k, gold mentions (%)")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plots(results: Dict[str, dict], out_dir: Union[str, Path]) -> List[Path]:
    """Write the plots the results have data for; RETURNS their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in (("ner_prf.png", plot_ner), ("linker_recall_at_k.png", plot_recall_at_k)):
        if plot(results, out / name):
            written.append(out / name)
    return written
