#!/usr/bin/env python3
"""Tables for docs/results.md ("Attention-probability pruning") from attention_prune sweeps.

Reads SWEEP_DIR/<run>/summary.json's attention_pruning block: the dev metric and the
realized attention sparsity (dropped share of valid query x key entries at the task's real
lengths) with the mask before fine-tuning and after it. Runs are named <rule>_<key>-<value>
(sweeps/attention_sst2.json, sweeps/attention_rte.json). Prints one markdown row per run, in the sweep's order, and
the per-layer sparsity of each run after fine-tuning.

  python3 scripts/attention_tables.py runs/attention-sst2 [--baseline runs/minilm-sst2-full]
  python3 scripts/attention_tables.py runs/attention-rte --baseline runs/minilm-rte-full
"""
import argparse
import json
import os

RULES = [("topk", "top-k"), ("threshold", "fixed threshold"), ("learned", "learned threshold"),
         ("static", "static positions")]


def setting_value(name):  # runs of a rule in the order of their value (keep 0.5, 0.25, 0.1 / sparsity up)
    try:
        v = float(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return (name, 0.0)
    return (name.split("_")[0], -v if "keep" in name else v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep_dir")
    ap.add_argument("--baseline", default=None)
    a = ap.parse_args()
    metric = "accuracy"
    if a.baseline:
        b = json.load(open(os.path.join(a.baseline, "summary.json")))
        print(f"Unpruned: {100 * b['final_eval'][metric]:.2f}\n")
    print("| rule | setting | sparsity before | dev before | sparsity after | dev after |")
    print("| --- | --- | --- | --- | --- | --- |")
    layers = []
    for prefix, label in RULES:
        for name in sorted(os.listdir(a.sweep_dir), key=setting_value):
            path = os.path.join(a.sweep_dir, name, "summary.json")
            if not name.startswith(prefix + "_") or not os.path.exists(path):
                continue
            ap_ = json.load(open(path))["attention_pruning"]
            bef, aft = ap_["before"], ap_["after"]
            setting = name[len(prefix) + 1:].replace("-", " ")
            print(f"| {label} | {setting} | {100 * bef['attention']['sparsity']:.1f}% | "
                  f"{100 * bef['dev'][metric]:.2f} | {100 * aft['attention']['sparsity']:.1f}% | "
                  f"{100 * aft['dev'][metric]:.2f} |")
            layers.append((label, setting, aft["attention"]["per_layer"]))
    print("\nRealized sparsity per layer after fine-tuning (%):\n")
    n = max((len(l) for _, _, l in layers), default=0)
    print("| rule | setting | " + " | ".join(f"layer {i}" for i in range(n)) + " |")
    print("| --- | --- |" + " --- |" * n)
    for label, setting, per in layers:
        print(f"| {label} | {setting} | " + " | ".join(f"{100 * v:.1f}" for v in per) + " |")


if __name__ == "__main__":
    main()
