"""Candidate indexes at today's KB size and at millions of names: build time, size, load time,
memory, query speed and, for the dense indexes, recall against the exact search.

Usage:
  python scripts/benchmark_scale.py DENSE_KB_DIR OUT_DIR --names 3000000 --mentions corpus/bc5cdr/test.spacy
      [--mrconso META/MRCONSO.RRF] [--kinds SQ8 IVF4096,SQ8 IVF4096,PQ48]

DENSE_KB_DIR is a knowledge base with a dense index (`medllm build-dense-index`, kind
numpy: its exact vectors are the real ones). Names past the KB's own come from a UMLS
`MRCONSO.RRF` (English rows) when given, else from generated variants of the KB's names
(word order, a dropped or doubled word, a character typo, qualifiers such as "NOS",
punctuation and case: the kinds of variation UMLS source vocabularies add), each kept by its
source name's concept. Every TF-IDF figure is measured on those real strings.

Dense vectors at that scale: encoding 3 million names with the 6-layer MiniLM encoder takes
about 100 minutes on 2 CPU cores (the rate is measured here, on the KB's names) - a GPU job.
Unless `--encode` is given, a generated name's vector is its source name's real vector
plus Gaussian noise, re-normalized (the noise level is set so that a variant's cosine to
its source matches the median measured on 2,000 real encoded variants). Index size, build
time, load time, memory and query speed depend on the number and width of the vectors, not
on what they say; recall against exact search is reported on these vectors and labelled so.

Loads are measured in a fresh process (peak RSS of that process alone).
Writes OUT_DIR/scale.json and OUT_DIR/scale.md.
"""
import argparse
import multiprocessing as mp
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spacy_medllm.evaluation.candidates import gold_mentions
from spacy_medllm.evaluation.metrics import peak_rss_mb, write_report
from spacy_medllm.kb import CandidateGenerator, KnowledgeBase
from spacy_medllm.kb.dense import build_faiss, exact_top_k, kb_names

QUALIFIERS = ["nos", "unspecified", "(disorder)", "(substance)", "[x]", "finding", "product", "nec"]


def variants(name: str, rng: random.Random):
    """Generated surface variants of one name."""
    words = name.split()
    out = []
    if len(words) > 1:
        w = words[:]
        rng.shuffle(w)
        out.append(" ".join(w))
        out.append(", ".join([" ".join(words[1:]), words[0]]))
        drop = rng.randrange(len(words))
        out.append(" ".join(words[:drop] + words[drop + 1 :]))
    out.append(f"{name} {rng.choice(QUALIFIERS)}")
    out.append(f"{rng.choice(QUALIFIERS)} {name}")
    if len(name) > 4:
        i = rng.randrange(1, len(name) - 2)
        out.append(name[:i] + name[i + 1] + name[i] + name[i + 2 :])  # swapped letters
        j = rng.randrange(1, len(name) - 1)
        out.append(name[:j] + name[j + 1 :])  # a dropped letter
        out.append(name[:j] + name[j] + name[j:])  # a doubled letter
    out.append(re.sub(r"[-,/]", " ", name))
    out.append(name.upper())
    out.append(" ".join(words + [words[-1]]))
    return [v for v in out if v.strip() and v != name]


def scaled_kb(kb: KnowledgeBase, n_names: int, mrconso: Path = None, seed: int = 0):
    """A copy of the KB's concepts with names added up to n_names; (kb, {(concept row,
    normalized added name): the KB name row it varies, or -1 for an MRCONSO name})."""
    from spacy_medllm.kb.knowledge_base import Concept, normalize_alias

    names, owners = kb_names(kb)
    concepts = [Concept(c.concept_id, c.canonical_name, list(c.aliases), list(c.types)) for c in kb]
    seen = [set(normalize_alias(n) for n in c.names) for c in concepts]
    total = len(names)
    sources = {}
    if mrconso is not None:
        position = {c.concept_id: i for i, c in enumerate(concepts)}
        with open(mrconso, encoding="utf8") as f:
            for line in f:
                row = line.rstrip("\n").split("|")
                if len(row) < 15 or row[1] != "ENG" or row[16:17] == ["O"]:
                    continue
                cui, text = row[0], row[14]
                if cui not in position:
                    position[cui] = len(concepts)
                    concepts.append(Concept(cui, text, [], ["UMLS"]))
                    seen.append({normalize_alias(text)})
                    total += 1
                    sources[(position[cui], normalize_alias(text))] = -1
                    continue
                i = position[cui]
                key = normalize_alias(text)
                if key not in seen[i]:
                    seen[i].add(key)
                    concepts[i].aliases.append(text)
                    total += 1
                    sources[(i, key)] = -1
                if total >= n_names:
                    break
    rng = random.Random(seed)
    rounds = 0
    while total < n_names and rounds < 50:
        rounds += 1
        for row in rng.sample(range(len(names)), len(names)):
            owner = int(owners[row])
            for v in variants(names[row], rng):
                key = normalize_alias(v)
                if key in seen[owner]:
                    continue
                seen[owner].add(key)
                concepts[owner].aliases.append(v)
                sources[(owner, key)] = row
                total += 1
                break
            if total >= n_names:
                break
    big = KnowledgeBase(concepts)
    return big, sources


def _load_child(queue, kind, path, kb_path):
    if kind == "none":  # the interpreter with the package imported: what every load adds to
        queue.put({"load_s": 0.0, "kb_load_s": 0.0, "peak_rss_mb": peak_rss_mb()})
        return
    t0 = time.perf_counter()
    kb = KnowledgeBase.from_disk(kb_path)
    kb_s = time.perf_counter() - t0
    if kind == "tfidf":
        CandidateGenerator.from_disk(path, kb)
    else:
        import faiss

        faiss.read_index(str(path))
    queue.put({"load_s": round(time.perf_counter() - t0, 2), "kb_load_s": round(kb_s, 2), "peak_rss_mb": peak_rss_mb()})


def fresh_load(kind, path, kb_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_load_child, args=(queue, kind, str(path), str(kb_path)))
    p.start()
    out = queue.get()
    p.join()
    return out


def dir_mb(path: Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return round(sum(f.stat().st_size for f in files) / 2**20, 1)


def bench_tfidf(kb: KnowledgeBase, mentions, work: Path, label: str) -> dict:
    kb_path = work / f"{label}_kb.msgpack"
    t0 = time.perf_counter()
    kb.to_disk(kb_path)
    gen = CandidateGenerator(kb)
    build_s = time.perf_counter() - t0
    gen.to_disk(work / f"{label}_tfidf")
    t0 = time.perf_counter()
    gen(mentions, k=30)
    query_s = time.perf_counter() - t0
    load = fresh_load("tfidf", work / f"{label}_tfidf", kb_path)
    del gen
    return {"index": "TF-IDF char 3-grams (sparse, exact)", "build_s": round(build_s, 1),
            "disk_mb": dir_mb(work / f"{label}_tfidf"), "kb_mb": dir_mb(kb_path),
            "mentions_per_s": round(len(mentions) / query_s), **load}


def bench_dense(vectors: np.ndarray, queries: np.ndarray, kinds, work: Path, label: str, kb_path: Path) -> list:
    import faiss

    rows = []
    truth = exact_top_k(vectors, queries, 10, block=65536)[1]
    for kind in kinds:
        t0 = time.perf_counter()
        index = build_faiss(vectors, kind)
        build_s = time.perf_counter() - t0
        inner = faiss.downcast_index(index)
        params = ""
        if hasattr(inner, "nprobe"):
            inner.nprobe = 32
            params = "nprobe 32"
        if hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = 128
            params = "efSearch 128"
        file = work / f"{label}_{kind.replace(',', '_')}.faiss"
        faiss.write_index(index, str(file))
        t0 = time.perf_counter()
        _, found = index.search(queries, 10)
        query_s = time.perf_counter() - t0
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
        load = fresh_load("faiss", file, kb_path)
        rows.append({"index": f"dense {kind}" + (f" ({params})" if params else ""), "build_s": round(build_s, 1),
                     "disk_mb": dir_mb(file), "queries_per_s": round(len(queries) / query_s),
                     "recall@10_vs_exact": round(recall * 100, 1), **load})
        file.unlink()
        del index
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kb_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--names", type=int, default=3_000_000)
    ap.add_argument("--mentions", type=Path, required=True)
    ap.add_argument("--mrconso", type=Path, default=None)
    ap.add_argument("--kinds", nargs="+", default=["SQ8", "IVF4096,SQ8", "IVF4096,PQ48"])
    ap.add_argument("--encode", action="store_true", help="encode every generated name (slow on CPU)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder, removed)")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="medllm_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"kb": str(args.kb_dir), "mentions": str(args.mentions), "rows": [],
               "import_rss_mb": fresh_load("none", "", "")["peak_rss_mb"]}
    kb = KnowledgeBase.from_disk(args.kb_dir)
    gen = CandidateGenerator.from_disk(args.kb_dir / "index", kb)
    if gen.dense is None or gen.dense.kind != "numpy":
        sys.exit(f"{args.kb_dir}: needs a dense index of kind numpy (medllm build-dense-index --kind numpy)")
    dense = gen.dense
    mention_texts = [m.text for m in gold_mentions(args.mentions)]
    print(f"{len(mention_texts):,} mentions; encoding them", file=sys.stderr)
    t0 = time.perf_counter()
    queries = dense.encoder.encode(mention_texts)
    encode_rate = len(mention_texts) / (time.perf_counter() - t0)
    names, owners = kb_names(kb)
    sample = random.Random(1).sample(names, min(2000, len(names)))
    t0 = time.perf_counter()
    dense.encoder.encode(sample)
    name_rate = len(sample) / (time.perf_counter() - t0)
    results["encoder"] = {"mentions_per_s": round(encode_rate), "kb_names_per_s": round(name_rate)}
    base_vectors = dense.name_vectors(np.arange(len(dense)))
    del gen
    # dense searches: 1,000 distinct mentions (exact search over millions of names for all of them is minutes)
    unique = sorted(set(range(len(mention_texts))), key=lambda i: mention_texts[i])
    distinct = sorted({mention_texts[i].lower(): i for i in unique}.values())
    pick = sorted(random.Random(0).sample(distinct, min(1000, len(distinct))))
    queries = np.ascontiguousarray(queries[pick])
    results["dense_queries"] = len(pick)

    # today's KB
    print(f"today's KB: {len(names):,} names", file=sys.stderr)
    row = bench_tfidf(kb, mention_texts, work, "kb")
    results["rows"].append({"scale": "KB", "names": len(names), **row})
    for r in bench_dense(base_vectors, queries, ["Flat"] + args.kinds, work, "kb", work / "kb_kb.msgpack"):
        results["rows"].append({"scale": "KB", "names": len(names), **r})
    results["rows"].append({"scale": "KB", "names": len(names), "index": "dense numpy float16 (exact)",
                            "disk_mb": round(base_vectors.shape[0] * base_vectors.shape[1] * 2 / 2**20, 1)})

    # scaled
    print(f"generating names up to {args.names:,}", file=sys.stderr)
    t0 = time.perf_counter()
    big, sources = scaled_kb(kb, args.names, args.mrconso)
    big_names, big_owners = kb_names(big)
    results["scaled"] = {"names": len(big_names), "concepts": len(big), "generated": sum(1 for v in sources.values() if v >= 0),
                         "from_mrconso": sum(1 for v in sources.values() if v < 0), "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{len(big_names):,} names; TF-IDF", file=sys.stderr)
    row = bench_tfidf(big, mention_texts, work, "big")
    results["rows"].append({"scale": "scaled", "names": len(big_names), **row})

    # vectors of the scaled name list: real ones for the KB's names, noisy copies for the rest
    rng = np.random.default_rng(0)
    # noise level: a real variant's cosine to its source, median over 2,000 encoded variants
    pairs = [(n, variants(n, random.Random(i))[0]) for i, n in enumerate(random.Random(2).sample(names, min(2000, len(names)))) if variants(n, random.Random(i))]
    src_vec = dense.encoder.encode([p[0] for p in pairs])
    var_vec = dense.encoder.encode([p[1] for p in pairs])
    target = float(np.median((src_vec * var_vec).sum(1)))
    dim = base_vectors.shape[1]
    sigma = float(np.sqrt((1 / target**2 - 1) / dim))
    results["synthetic_vectors"] = {"median_variant_cosine": round(target, 4), "sigma": round(sigma, 5), "encoded": args.encode,
                                    "variant_pairs": len(pairs)}
    base_of = {(int(o), n): r for r, (n, o) in enumerate(zip(names, owners))}
    big_vectors = np.empty((len(big_names), dim), dtype=np.float32)
    copy_rows, copy_src, encode_rows = [], [], []
    for r, (n, o) in enumerate(zip(big_names, big_owners)):
        key = (int(o), n)
        if key in base_of:
            big_vectors[r] = base_vectors[base_of[key]]
        elif not args.encode and sources.get(key, -1) >= 0:
            copy_rows.append(r)
            copy_src.append(sources[key])
        else:
            encode_rows.append(r)
    for start in range(0, len(copy_rows), 262144):
        rows, src = copy_rows[start : start + 262144], copy_src[start : start + 262144]
        noisy = base_vectors[src] + rng.normal(0, sigma, size=(len(src), dim)).astype(np.float32)
        big_vectors[rows] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    if encode_rows:
        print(f"encoding {len(encode_rows):,} names", file=sys.stderr)
        big_vectors[encode_rows] = dense.encoder.encode([big_names[r] for r in encode_rows])
    results["synthetic_vectors"].update({"noisy_copies": len(copy_rows), "encoded_names": len(encode_rows)})
    del base_vectors
    print(f"dense indexes over {len(big_vectors):,} vectors", file=sys.stderr)
    for r in bench_dense(big_vectors, queries, args.kinds, work, "big", work / "big_kb.msgpack"):
        results["rows"].append({"scale": "scaled", "names": len(big_names), **r})
    results["rows"].append({"scale": "scaled", "names": len(big_names), "index": "dense numpy float16 (exact)",
                            "disk_mb": round(len(big_vectors) * dim * 2 / 2**20, 1)})
    results["encode_minutes_at_scale"] = round(len(big_names) / name_rate / 60, 1)
    if args.work is None:
        shutil.rmtree(work)
    write_report(args.out_dir, "scale", results, markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = ["| scale | names | index | build s | disk MB | load s (fresh process) | peak RSS MB (load) | queries/s | recall@10 vs exact |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        q = r.get("mentions_per_s") or r.get("queries_per_s")
        lines.append(f"| {r['scale']} | {r['names']:,} | {r['index']} | {r.get('build_s', '')} | {r.get('disk_mb', '')} | "
                     f"{r.get('load_s', '')} | {r.get('peak_rss_mb', '')} | {q if q is not None else ''} | {r.get('recall@10_vs_exact', '')} |")
    e, sc, sv = results["encoder"], results.get("scaled", {}), results.get("synthetic_vectors", {})
    lines.append("")
    lines.append(f"Peak RSS of a fresh process that only imports spacy_medllm (torch, spaCy...): {results.get('import_rss_mb')} MB; "
                 "the load columns include it and the KB itself.")
    lines.append(f"Name encoder on this machine: {e['kb_names_per_s']:,} KB names/s, {e['mentions_per_s']:,} mentions/s; "
                 f"encoding {sc.get('names', 0):,} names would take {results.get('encode_minutes_at_scale')} min.")
    lines.append(f"Scaled KB: {sc.get('names', 0):,} names on {sc.get('concepts', 0):,} concepts ({sc.get('generated', 0):,} generated variants, "
                 f"{sc.get('from_mrconso', 0):,} from MRCONSO). TF-IDF rows are measured on these strings; queries/s of TF-IDF rows are "
                 f"mentions/s of the whole generator (top 30), of dense rows faiss searches/s (top 10) on encoded mention vectors.")
    if sv and not sv.get("encoded"):
        lines.append(f"Dense rows at scale: the KB's real name vectors plus, for each generated name, its source name's vector with "
                     f"Gaussian noise (sigma {sv['sigma']}, matching the median cosine {sv['median_variant_cosine']} of {sv.get('variant_pairs', 2000):,} really "
                     f"encoded variants to their source). Load and RSS: a fresh process loading the KB and that index alone.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
