#!/usr/bin/env python3
"""Markdown table from scripts/bench_vs_torch.sh's JSON lines (stdin or a file): per mode,
shape and thread count the median seconds per step of each implementation over the rounds,
and Lopper's speed-up over each other one: the median over rounds of (their time / Lopper's)
within the round, which cancels the drift of a shared VM's speed between rounds (the runs of
one round are back to back), with its range over the rounds.

  scripts/bench_vs_torch.sh | tee bench.jsonl; python3 scripts/bench_table.py bench.jsonl
"""
import fileinput
import json
import statistics
from collections import defaultdict

times = defaultdict(list)  # (mode, batch, seq, threads, impl) -> seconds
by_round = defaultdict(dict)  # (mode, batch, seq, threads, round) -> impl -> seconds
for line in fileinput.input():
    line = line.strip()
    if not line.startswith("{"):
        continue
    j = json.loads(line)
    impl = j["impl"].split()[0]
    times[(j["mode"], j["batch"], j["seq"], j["threads"], impl)].append(j["seconds_per_step"])
    by_round[(j["mode"], j["batch"], j["seq"], j["threads"], j.get("round", 0))][impl] = j["seconds_per_step"]

impls = ["lopper", "pytorch", "onnxruntime"]
rows = sorted({k[:4] for k in times}, key=lambda k: (k[0] != "train", -k[1] * k[2], k[3]))


def fmt(s):
    return "-" if s is None else (f"{s * 1000:.1f} ms" if s < 0.1 else f"{s:.3f} s")


print("| step | threads | Lopper | PyTorch | ONNX Runtime | Lopper vs PyTorch | vs ONNX Runtime | rounds |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for mode, b, s, t in rows:
    med = {i: statistics.median(times[(mode, b, s, t, i)]) if times.get((mode, b, s, t, i)) else None for i in impls}
    lo = med["lopper"]

    def ratio(other):
        r = [v[other] / v["lopper"] for k, v in by_round.items() if k[:4] == (mode, b, s, t) and other in v and "lopper" in v]
        if not r:
            return "-"
        return f"{statistics.median(r):.2f}x" + (f" ({min(r):.2f}-{max(r):.2f})" if len(r) > 1 else "")

    name = ("training" if mode == "train" else "forward") + f", batch {b} x {s}"
    n = len(times.get((mode, b, s, t, "lopper"), []))
    print(f"| {name} | {t} | {fmt(lo)} | {fmt(med['pytorch'])} | {fmt(med['onnxruntime'])} | "
          f"{ratio('pytorch')} | {ratio('onnxruntime')} | {n} |")
