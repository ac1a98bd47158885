#!/usr/bin/env python3
"""Tables for docs/results.md ("N:M sparsity") from an nm_prune sweep.

Reads SWEEP_DIR/<run>/metrics.jsonl (the dev metric right after nm_prune, stage 0) and
summary.json (after sparse fine-tuning; the pattern, |W| kept, the permutation search, the
checks on the final weights) and prints markdown: dev metric right after pruning -> after
fine-tuning per series and pattern, the share of |W| each keeps, 2d best against greedy.
Runs are named <series>_m-<m>_n-<n> (sweeps/nm_sst2.json); a run with no training stage
(sweeps/nm_sst2_oneshot.json) shows its dev metric right after pruning only. Several sweep
folders may be given; a run of an earlier one wins.

  python3 scripts/nm_tables.py runs/nm-sst2 runs/nm-sst2-oneshot [--baseline runs/minilm-sst2-full]
"""
import argparse
import json
import os
import re

PATTERNS = [(2, 4), (4, 8), (8, 16), (16, 32), (1, 4), (2, 8), (8, 32)]
SERIES = [("1d", "1d"), ("1d-perm", "1d, permuted"), ("vw4", "vectors 4x1"), ("vw4-perm", "vectors 4x1, permuted"),
          ("bw4x4", "blocks 4x4"), ("bw4x4-perm", "blocks 4x4, permuted"), ("1d-dense2", "1d, layers 0-1 dense"),
          ("2d-best", "2d, best"), ("2d-greedy", "2d, ASP's greedy")]


def load(run_dir):
    s = json.load(open(os.path.join(run_dir, "summary.json")))
    pruned = None
    for line in open(os.path.join(run_dir, "metrics.jsonl")):
        j = json.loads(line)
        if j.get("stage") == 0 and "eval" in j:
            pruned = j["eval"]
    return s, pruned


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep_dirs", nargs="+")
    ap.add_argument("--baseline", default=None)
    a = ap.parse_args()
    runs = {}
    for sweep_dir in a.sweep_dirs:
        for name in sorted(os.listdir(sweep_dir)):
            m = re.fullmatch(r"([a-z0-9-]+)_m-(\d+)_n-(\d+)", name)
            d = os.path.join(sweep_dir, name)
            key = (m.group(1), int(m.group(3)), int(m.group(2))) if m else None
            if m and key not in runs and os.path.exists(os.path.join(d, "summary.json")):
                runs[key] = load(d)
    metric = "accuracy"
    if a.baseline:
        b = json.load(open(os.path.join(a.baseline, "summary.json")))
        print(f"Unpruned: {100 * b['final_eval'][metric]:.2f}\n")
    present = [p for p in PATTERNS if any((s, *p) in runs for s, _ in SERIES)]
    head = "| series | " + " | ".join(f"{n}:{m}" for n, m in present) + " |"
    rule = "| --- |" + " --- |" * len(present)

    print("Dev accuracy (%), right after nm_prune -> after sparse fine-tuning:\n")
    def table(cell):  # one row per series that has a run, cell(run) per pattern
        print(head + "\n" + rule)
        for key, label in SERIES:
            cells = [cell(runs[(key, n, m)]) if (key, n, m) in runs else "" for n, m in present]
            if any(cells):
                print(f"| {label} | " + " | ".join(cells) + " |")

    def accuracy(r):
        if not r[0].get("timing"):  # pruned, not fine-tuned
            return f"{100 * r[1][metric]:.2f} -> (none)"
        return f"{100 * r[1][metric]:.2f} -> {100 * r[0]['final_eval'][metric]:.2f}"

    def kept(r):
        p = r[0]["sparsity"]["nm_prune"]
        k = f"{100 * p['kept_magnitude']:.2f}"
        return f"{100 * p['kept_magnitude_unpermuted']:.2f} -> {k}" if "kept_magnitude_unpermuted" in p else k

    table(accuracy)

    print("\nShare of the pruned matrices' |W| kept (%; permuted: without -> with the permutation):\n")
    table(kept)

    print("\nChecks and costs per run (groups violating the pattern and held weights that moved, after fine-tuning;"
          " nm_prune seconds):\n")
    bad = [(k, r[0]["sparsity"]["groups_violating"], r[0]["sparsity"]["held_weights_nonzero"]) for k, r in runs.items()]
    print(f"{len(runs)} runs; violating groups in all: {sum(b[1] for b in bad)}; held weights non-zero: "
          f"{sum(b[2] for b in bad)}")
    secs = {}
    for (key, n, m), r in runs.items():
        secs.setdefault(key, []).append(r[0]["sparsity"]["nm_prune"]["seconds"])
    print("; ".join(f"{k}: {min(v):.1f}-{max(v):.1f} s" for k, v in secs.items()))

    two = [(n, m) for n, m in present if ("2d-best", n, m) in runs or ("2d-greedy", n, m) in runs]
    if two:
        print("\n2d N:M, the exact best against ASP's greedy:\n")
        print("| pattern | select | weights kept (%) | |W| kept (%) | right after | after fine-tuning |")
        print("| --- | --- | --- | --- | --- | --- |")
        for n, m in two:
            for key in ("2d-best", "2d-greedy"):
                r = runs.get((key, n, m))
                if not r:
                    continue
                p = r[0]["sparsity"]["nm_prune"]
                print(f"| {n}:{m} | {key[3:]} | {100 * (1 - p['sparsity']):.2f} | {100 * p['kept_magnitude']:.2f} | "
                      f"{100 * r[1][metric]:.2f} | {100 * r[0]['final_eval'][metric]:.2f} |")


if __name__ == "__main__":
    main()
