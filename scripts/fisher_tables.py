#!/usr/bin/env python3
"""Tables for docs/results.md ("Retraining-free pruning") from a fisher_search sweep.

Reads SWEEP_DIR/<run>/summary.json (what each run measured: dev metric, the pipeline's
seconds per phase, the budget and cost reached) and SWEEP_DIR/table.csv (`sweep collect`'s
latencies, re-measured for every model in interleaved rounds) and prints markdown:
one table of dev metric per target and variant, one of speed-ups and pipeline seconds.
Runs are named <constraint>-<variant>_target-<t> (sweeps/fisher_sst2.json).

  python3 scripts/fisher_tables.py runs/fisher-sst2 [--baseline runs/minilm-sst2-full]
"""
import argparse
import csv
import json
import os
import re


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep_dir")
    ap.add_argument("--baseline", default=None, help="the unpruned run's folder (its summary.json)")
    a = ap.parse_args()
    lat = {}
    table = os.path.join(a.sweep_dir, "table.csv")
    if os.path.exists(table):
        for row in csv.DictReader(open(table)):
            lat[row["run"]] = (float(row["latency b1 (ms)"] or "nan"), float(row["latency b32 (ms)"] or "nan"))
    runs = {}
    for name in sorted(os.listdir(a.sweep_dir)):
        m = re.fullmatch(r"([a-z-]+)-(search|rearrange|rescale|iterative)_target-([0-9.]+)", name)
        path = os.path.join(a.sweep_dir, name, "summary.json")
        if not m or not os.path.exists(path):
            continue
        s = json.load(open(path))
        runs[(m.group(1), m.group(2), float(m.group(3)))] = (name, s)
    metric = None
    base = None
    if a.baseline:
        base = json.load(open(os.path.join(a.baseline, "summary.json")))
    for (_, s) in runs.values():
        metric = s["best"]["metric"] if "best" in s and "metric" in s["best"] else "accuracy"
        break
    def fmt(v):  # accuracy in %, a correlation as it is
        return f"{v:.3f}" if metric == "mcc" else f"{100 * v:.2f}"
    variants = ["search", "rearrange", "rescale", "iterative"]
    heads = {"search": "search only", "rearrange": "+ rearrangement", "rescale": "+ rescaling (Kwon)",
             "iterative": "iterative"}
    for constraint in sorted({k[0] for k in runs}):
        targets = sorted({k[2] for k in runs if k[0] == constraint}, reverse=True)
        print(f"\n**{constraint}** (dev {metric}" +
              (f"; unpruned {fmt(base['final_eval'][metric])}" if base else "") + ")\n")
        print("| target | " + " | ".join(heads[v] for v in variants) + " |")
        print("|---" * (len(variants) + 1) + "|")
        for t in targets:
            cells = []
            for v in variants:
                r = runs.get((constraint, v, t))
                cells.append(fmt(r[1]['final_eval'][metric]) if r else "")
            print(f"| {t} | " + " | ".join(cells) + " |")
        print(f"\n| target | variant | heads | FFN neurons | cost reached | FLOPs x | b1 ms (x) | b32 ms (x) | pipeline s (gradients / search / rearrange / tune) |")
        print("|---|---|---|---|---|---|---|---|---|")
        b1_0 = b32_0 = None
        if base is not None and "baseline-unpruned" in lat:
            b1_0, b32_0 = lat["baseline-unpruned"]
        for t in targets:
            for v in variants:
                r = runs.get((constraint, v, t))
                if not r:
                    continue
                name, s = r
                f = s["pruning"]["fisher_search"]
                sec = f["seconds"]
                b1, b32 = lat.get(name, (s["latency_ms"]["batch_1"], s["latency_ms"]["batch_32"]))
                sp = s["pruning"]["speedup"]
                x1 = f" ({b1_0 / b1:.2f})" if b1_0 else ""
                x32 = f" ({b32_0 / b32:.2f})" if b32_0 else ""
                print(f"| {t} | {heads[v]} | {sum(s['heads_per_layer'])} | {sum(s['intermediate_sizes'])} | "
                      f"{f['cost_fraction']:.3f} | {sp['flops']:.2f} | {b1:.2f}{x1} | {b32:.2f}{x32} | "
                      f"{sec['total']:.1f} ({sec['gradients']:.1f} / {sec['search']:.2f} / {sec['rearrange']:.2f} / "
                      f"{sec['tune']:.1f}) |")


if __name__ == "__main__":
    main()
