"""ONNX Runtime side of the BERT throughput comparison (run by scripts/bench_vs_torch.sh
inside tests/fixtures/.venv): the model of --model with a 2-label classifier head (as
bench_bert and torch_bert.py build it, classifier seeded), exported once by torch.onnx to
--onnx (dynamic batch and sequence axes) and run by an InferenceSession with every graph
optimization, intra-op threads = --threads, one inter-op thread. Forward only. Prints one
JSON line with the same keys as bench_bert; with --profile, first ONNX Runtime's own time per
operator type and GEMM output shape over the timed calls (its session profiler), to set
beside LOPPER_PROFILE=1 bench_bert. The export was checked against PyTorch's logits
(2026-11-23, torch 2.15.0, onnxruntime 1.32.0): within 5e-8 at 3 x 40 with a padded row,
1 x 25 and 2 x 128."""
import argparse
import json
import os

import numpy as np
import onnxruntime as ort

from timing import seconds_per_call

p = argparse.ArgumentParser()
p.add_argument("--model", required=True, help="a Hugging Face BERT folder")
p.add_argument("--onnx", required=True, help="the exported model: written when missing, else reused")
p.add_argument("--batch", type=int, default=32)
p.add_argument("--seq", type=int, default=128)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--iters", type=int, default=10)
p.add_argument("--profile", action="store_true", help="print ONNX Runtime's time per operator (stderr)")
a = p.parse_args()

if not os.path.exists(a.onnx):
    import torch
    from transformers import BertForSequenceClassification
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(a.model, num_labels=2, attn_implementation="eager").eval()
    ids = torch.randint(1000, 21000, (2, 16))
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    dyn = {0: "batch", 1: "seq"}
    os.makedirs(os.path.dirname(os.path.abspath(a.onnx)), exist_ok=True)
    torch.onnx.export(model, args, a.onnx, input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "token_type_ids": dyn,
                                    "logits": {0: "batch"}})

so = ort.SessionOptions()
so.intra_op_num_threads = a.threads
so.inter_op_num_threads = 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
if a.profile:
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(os.path.dirname(os.path.abspath(a.onnx)), "ort_profile")
sess = ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
ids = rng.integers(1000, 21000, (a.batch, a.seq), dtype=np.int64)
feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def step():
    return sess.run(None, feed)[0][0, 0]


warmup = 2
secs = seconds_per_call(step, a.iters, warmup)
if a.profile:  # kernel times of every call, warm-up ones included
    import collections
    import sys
    total, count = collections.Counter(), collections.Counter()
    trace = sess.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.remove(trace)  # one file per run otherwise piles up beside the model
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            if "MatMul" in op or "Gemm" in op:
                op += " -> " + "x".join(map(str, e["args"]["output_type_shape"][0]["float"]))
            total[op] += e["dur"]
            count[op] += 1
    calls = warmup + a.iters
    print(f"ONNX Runtime per forward (mean of {calls} calls, profiled): op, ms, nodes", file=sys.stderr)
    for op, us in total.most_common():
        print(f"  {op:40s} {us / calls / 1000:9.3f} {count[op] // calls:5d}", file=sys.stderr)
    print(f"  {'all operators':40s} {sum(total.values()) / calls / 1000:9.3f}", file=sys.stderr)
print(json.dumps({"impl": "onnxruntime " + ort.__version__, "device": "cpu", "mode": "forward", "batch": a.batch,
                  "seq": a.seq, "threads": a.threads, "seconds_per_step": round(secs, 4),
                  "sentences_per_s": round(a.batch / secs, 1), "tokens_per_s": round(a.batch * a.seq / secs)}))
