#!/usr/bin/env python3
"""Collects a head-pruning sweep (scripts/sweep_heads.sh) into a Markdown table.

Usage: collect_heads.py SWEEP_DIR [UNPRUNED_SUMMARY]. Standard library only.
"""
import json
import statistics
import pathlib
import sys


def latency(run_dir):
    """Median forward ms at batch 1 and 32 over the bench_bert lines in latency.jsonl, or None."""
    f = run_dir / "latency.jsonl"
    if not f.exists():
        return None
    ms = {}
    for line in f.read_text().splitlines():
        j = json.loads(line)
        ms.setdefault(j["batch"], []).append(1000 * j["seconds_per_step"])
    return {b: statistics.median(v) for b, v in ms.items()}


def last_eval(run_dir, stage):
    """The accuracy of the last evaluation logged in a stage (before any best-checkpoint reload)."""
    acc = None
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        j = json.loads(line)
        if j.get("stage") == stage and "eval" in j:
            acc = j["eval"]["accuracy"]
    return acc


def main():
    sweep = pathlib.Path(sys.argv[1])
    base_acc, base_ms = None, None
    if len(sys.argv) > 2 and pathlib.Path(sys.argv[2]).exists():
        base = pathlib.Path(sys.argv[2])
        base_acc = json.loads(base.read_text())["final_eval"]["accuracy"]
        base_ms = latency(base.parent)
    rows, control = [], None
    for summary in sorted(sweep.glob("*/summary.json")):
        s = json.loads(summary.read_text())
        cfg = json.loads((summary.parent / "config.resolved.json").read_text())
        if "pruning" not in s:  # the control run: distillation steps without pruning
            control = (s, latency(summary.parent), last_eval(summary.parent, 0))
            continue
        gates = cfg["stages"][0]
        setting = f"target {gates['target_heads']}" if gates.get("target_heads") else f"λ = {gates['l0_penalty']:g}"
        if gates.get("ffn_gates"):
            setting += f", FFN gates λ_ffn = {gates['ffn_l0_penalty']:g}"
        p = s["pruning"]
        rows.append((p["heads_kept"], setting, s, p, latency(summary.parent),
                     last_eval(summary.parent, len(cfg["stages"]) - 2)))
    rows.sort(key=lambda r: -r[0])
    print("| run | heads kept of 72 | FFN neurons kept of 9216 | dev accuracy (best of mask_tune) | at its last step | Δ vs unpruned | "
          "GFLOPs / sentence | FLOPs × | latency b1 ms (×) | latency b32 ms (×) | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    if rows:
        b = rows[0][3]["before"]
        acc = f"{100 * base_acc:.2f}%" if base_acc is not None else "-"
        ms = base_ms or {1: b["latency_ms"]["batch_1"], 32: b["latency_ms"]["batch_32"]}
        print(f"| unpruned (the fine-tuned teacher) | 72 | 9216 | {acc} | | 0 | {b['flops']['total'] / 1e9:.3f} | 1.00 | "
              f"{ms[1]:.2f} | {ms[32]:.1f} | |")
    if control and base_acc is not None:
        s, ms, last = control
        acc = s["final_eval"]["accuracy"]
        lat = f"{ms[1]:.2f} | {ms[32]:.1f}" if ms else "- | -"
        print(f"| control: unpruned + the same 500 distillation steps | 72 | 9216 | {100 * acc:.2f}% | {100 * last:.2f}% | "
              f"{100 * (acc - base_acc):+.2f} | {s['flops']['total'] / 1e9:.3f} | 1.00 | {lat} | "
              f"{s['wall_seconds'] / 60:.1f} min |")
    for kept, setting, s, p, ms, last in rows:
        acc = s["final_eval"]["accuracy"]
        delta = f"{100 * (acc - base_acc):+.2f}" if base_acc is not None else "-"
        a, sp = p["after"], p["speedup"]
        if ms and base_ms:
            b1, b32 = f"{ms[1]:.2f} ({base_ms[1] / ms[1]:.2f})", f"{ms[32]:.1f} ({base_ms[32] / ms[32]:.2f})"
        else:  # the run's own measurement
            b1 = f"{a['latency_ms']['batch_1']:.2f} ({sp['batch_1']:.2f})"
            b32 = f"{a['latency_ms']['batch_32']:.1f} ({sp['batch_32']:.2f})"
        last_s = f"{100 * last:.2f}%" if last is not None else "-"
        ffn_kept = sum(s["intermediate_sizes"])
        print(f"| {setting} | {kept} | {ffn_kept} | {100 * acc:.2f}% | {last_s} | {delta} | {a['flops']['total'] / 1e9:.3f} | "
              f"{sp['flops']:.2f} | {b1} | {b32} | {s['wall_seconds'] / 60:.1f} min |")
    if rows:
        print(f"\nFLOPs and latency at the average dev length ({rows[0][3]['after']['flops']['seq_len']} tokens); "
              "heads per layer in each run's summary.json.")


if __name__ == "__main__":
    main()
