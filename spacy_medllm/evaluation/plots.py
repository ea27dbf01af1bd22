"""PNG plots of `medllm evaluate-pipeline` results (matplotlib, headless).

- `ner_prf.png`: per-label precision / recall / F1 bars of each pipeline's NER, per data set;
- `ner_confusion.png`: the NER's entity-level label confusion (gold label against
  predicted label, "none" for missed and spurious entities), counts in the cells, shaded
  by the share of the row;
- `linker_recall_at_k.png`: the linker's recall@k on gold mentions against k, per label;
- `relations_pr.png`: the relation component's concept-pair precision against recall over
  its thresholds, with gold entities and end to end, the reported P/R at the component's
  threshold marked.
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


def plot_confusion(results: Dict[str, dict], path: Union[str, Path]) -> bool:
    rows = [
        (f"{name}\n{ds}", d["ner"]["confusion"]) for name, res in results.items() for ds, d in res["datasets"].items()
        if (d.get("ner") or {}).get("confusion")
    ]
    if not rows:
        return False
    import numpy

    plt = _pyplot()
    size = max(len(confusion["labels"]) for _, confusion in rows)
    fig, axes = plt.subplots(1, len(rows), figsize=((1.1 + 0.75 * size) * len(rows), 0.9 + 0.75 * size), squeeze=False)
    for ax, (title, confusion) in zip(axes[0], rows):
        labels = confusion["labels"]
        counts = numpy.asarray(confusion["matrix"], dtype=float)
        shares = counts / numpy.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(len(labels)):
            for j in range(len(labels)):
                if i == j == len(labels) - 1:
                    continue  # none / none: nothing to count
                ax.text(j, i, f"{int(counts[i, j]):,}", ha="center", va="center", fontsize=8, color="white" if shares[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("gold", fontsize=8)
        overlaps = confusion["partial_overlaps"]["pairs"]
        ax.set_title(f"{title}\n({overlaps:,} missed/spurious pairs overlap)", fontsize=8)
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


def plot_relations_pr(results: Dict[str, dict], path: Union[str, Path]) -> bool:
    curves = [
        (f"{name} {ds} {label}", pr, d["relations"][label])
        for name, res in results.items() for ds, d in res["datasets"].items() for label, pr in (d.get("relations_pr") or {}).items()
    ]
    if not curves:
        return False
    plt = _pyplot()
    settings = (("gold_entities", "gold entities"), ("end_to_end", "end to end"))
    fig, axes = plt.subplots(1, len(settings), figsize=(5.0 * len(settings), 4.0), squeeze=False, sharey=True)
    for ax, (setting, title) in zip(axes[0], settings):
        for i, (label, pr, reported) in enumerate(curves):
            curve, point = pr[setting], reported[setting]
            color = f"C{i % 10}"
            ax.plot(curve["recall"], curve["precision"], color=color, label=f"{label} (AP {curve['average_precision']:.1f})")
            ax.plot([point["r"]], [point["p"]], marker="o", color=color, markeredgecolor="black", linestyle="none")
            relative = f", relative {pr['relative_threshold']:.3g}" if pr["relative_threshold"] is not None else ""
            ax.annotate(f"threshold {pr['threshold']:.3g}{relative}", (point["r"], point["p"]), textcoords="offset points", xytext=(5, 5), fontsize=7)
        ax.set_title(f"concept pairs, {title}", fontsize=9)
        ax.set_xlabel("recall (%)")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    axes[0][0].set_ylabel("precision (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plots(results: Dict[str, dict], out_dir: Union[str, Path]) -> List[Path]:
    """Write the plots the results have data for; RETURNS their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    plots = (
        ("ner_prf.png", plot_ner), ("ner_confusion.png", plot_confusion),
        ("linker_recall_at_k.png", plot_recall_at_k), ("relations_pr.png", plot_relations_pr),
    )
    for name, plot in plots:
        if plot(results, out / name):
            written.append(out / name)
    return written
