"""PyTorch side of the BERT throughput comparison (run by scripts/bench_vs_torch.sh inside
tests/fixtures/.venv): the same model, batch, sequence length, thread count and mode as
bench_bert, best settings (no autograd in forward mode). Prints one JSON line."""
import argparse
import json
import time

import torch
from transformers import BertForSequenceClassification

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--seq", type=int, default=128)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--iters", type=int, default=10)
p.add_argument("--mode", choices=["forward", "train"], default="forward")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
model = BertForSequenceClassification.from_pretrained(a.model, num_labels=2)
ids = torch.randint(1000, 21000, (a.batch, a.seq))
mask = torch.ones_like(ids)
labels = torch.zeros(a.batch, dtype=torch.long)
opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)


def step():
    if a.mode == "forward":
        model.eval()
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=mask).logits[0, 0].item()
    model.train()
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    opt.zero_grad()
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return out.loss.item()


for _ in range(2):
    step()
t0 = time.perf_counter()
for _ in range(a.iters):
    step()
secs = (time.perf_counter() - t0) / a.iters
print(json.dumps({"impl": "pytorch " + torch.__version__, "mode": a.mode, "batch": a.batch, "seq": a.seq,
                  "threads": a.threads, "seconds_per_step": round(secs, 4),
                  "sentences_per_s": round(a.batch / secs, 1), "tokens_per_s": round(a.batch * a.seq / secs)}))
