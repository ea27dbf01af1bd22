"""NIL rules compared offline on the dumps of `scripts/nil_dump.py`: per data set and entity
label, gold-mention acc@1 and end-to-end (span, label, id) P / R / F under each rule.

Rules (the answer is the best candidate unless the rule abstains):
- bias B: `medllm_linker`'s `nil_bias` (NIL's logit + B against the candidates' logits);
- pcand T: abstain when the best candidate's probability among the candidates is below T;
- margin M: abstain when the best candidate's logit leads the second's by less than M;
- pnil T: abstain when NIL's probability (NIL and the candidates) is at least T.
Gold-mention acc@1 here leaves out the gold mentions the tokenizer cannot represent
(`medllm evaluate-linker` counts them as misses), so it reads a little higher; end to end is
scored exactly as `evaluate-linker` scores it.

    python scripts/nil_rules.py metrics/nil_dump_train_s0.jsonl [more dumps]
    python scripts/nil_rules.py DUMP --bias Chemical=4 --bias Disease=0
"""
import argparse
import json
from typing import Dict, List, Mapping, Tuple, Union

import numpy

from spacy_medllm.linker.pipe import choose_slot

RULES: List[Tuple[str, float]] = (
    [("bias", b) for b in (-100.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)]
    + [("pcand", t) for t in (0.3, 0.4, 0.5, 0.6)]
    + [("margin", m) for m in (0.5, 1.0, 1.5, 2.0)]
    + [("pnil", t) for t in (0.5, 0.3, 0.2)]
)


def load(path: str) -> Dict[str, dict]:
    data: Dict[str, dict] = {}
    with open(path, encoding="utf8") as f:
        for n, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
            except ValueError as err:
                raise SystemExit(f"{path}:{n}: not a JSON line ({err})")
            if "gold_counts" in row:
                data[row["dataset"]] = {"counts": row["gold_counts"], "rows": []}
            else:
                row["logits"] = numpy.asarray(row["logits"], dtype="float64")
                data[row["dataset"]]["rows"].append(row)
    return data


def choose(row: dict, kind: str, value: Union[float, Mapping[str, float]]) -> int:
    """The slot a rule answers with: 0 NIL, else 1 + the candidate's index."""
    logits = row["logits"]
    if len(logits) == 1:
        return 0
    v = float(value.get(row["label"], 0.0)) if isinstance(value, Mapping) else float(value)
    if kind == "bias":
        return choose_slot(logits, len(logits) - 1, v)
    cands = logits[1:]
    best = 1 + int(cands.argmax())
    if kind == "pcand":
        p = numpy.exp(cands - cands.max())
        return best if p.max() / p.sum() >= v else 0
    if kind == "margin":
        top = numpy.sort(cands)[::-1]
        return best if len(top) == 1 or top[0] - top[1] >= v else 0
    if kind == "pnil":
        p = numpy.exp(logits - logits.max())
        return best if p[0] / p.sum() < v else 0
    raise ValueError(f"unknown rule {kind!r}")


def score(data: dict, kind: str, value, label: str = "") -> Tuple[float, float, float, float]:
    """(gold-mention acc@1, end-to-end P, R, F), percentages, for one label or all ("")."""
    n = right = tp = predicted = 0
    for row in data["rows"]:
        if label and row["label"] != label:
            continue
        slot = choose(row, kind, value)
        ok = slot > 0 and row["right"][slot - 1]
        if row["set"] == "gold":
            n += 1
            right += ok
        elif slot > 0:
            predicted += 1
            tp += ok and row["gold_span"]
    gold = sum(c for lab, c in data["counts"].items() if not label or lab == label)
    p = tp / predicted if predicted else 0.0
    r = tp / gold if gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return 100 * right / max(n, 1), 100 * p, 100 * r, 100 * f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dumps", nargs="+")
    parser.add_argument("--bias", action="append", default=[], help="LABEL=VALUE: score this per-label nil_bias only")
    args = parser.parse_args()
    setting: Dict[str, float] = {}
    for spec in args.bias:
        label, _, value = spec.partition("=")
        try:
            setting[label] = float(value)
        except ValueError:
            raise SystemExit(f"--bias {spec!r}: expected LABEL=NUMBER")
    rules = [("bias", setting)] if setting else RULES
    for path in args.dumps:
        for name, data in load(path).items():
            labels = [""] + sorted(data["counts"])
            print(f"## {path} {name}")
            print("| rule | " + " | ".join(f"{lab or 'overall'} acc@1 | e2e P / R / F" for lab in labels) + " |")
            for kind, value in rules:
                cells = []
                for lab in labels:
                    acc, p, r, f = score(data, kind, value, lab)
                    cells += [f"{acc:.2f}", f"{p:.1f} / {r:.1f} / {f:.2f}"]
                shown = ", ".join(f"{k} {v:g}" for k, v in value.items()) if isinstance(value, dict) else f"{value:g}"
                print(f"| {kind} {shown} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
