"""PyTorch side of the BERT throughput comparison (run by scripts/bench_vs_torch.sh inside
tests/fixtures/.venv, and by scripts/gpu_check.sh on a GPU): the same model, batch, sequence
length, thread count, device and mode as bench_bert, best settings (no autograd in forward
mode). --config gives random weights of a config's shape. Prints one JSON line."""
import argparse
import json

import torch
from transformers import BertConfig, BertForSequenceClassification

from timing import seconds_per_call

p = argparse.ArgumentParser()
g = p.add_mutually_exclusive_group(required=True)
g.add_argument("--model", help="a Hugging Face BERT folder")
g.add_argument("--config", help="a BERT config.json: random weights of that shape")
p.add_argument("--device", default="cpu")
p.add_argument("--tf32", action="store_true", help="TF32 tensor cores for f32 matmuls")
p.add_argument("--bf16", action="store_true", help="autocast to bf16 (CUDA)")
p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="transformers' attention implementation")
p.add_argument("--batch", type=int, default=32)
p.add_argument("--seq", type=int, default=128)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--iters", type=int, default=10)
p.add_argument("--mode", choices=["forward", "train"], default="forward")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
torch.backends.cuda.matmul.allow_tf32 = a.tf32
torch.backends.cudnn.allow_tf32 = a.tf32
if a.model:
    model = BertForSequenceClassification.from_pretrained(a.model, num_labels=2, attn_implementation=a.attn)
else:
    cfg = BertConfig.from_json_file(a.config)
    cfg.num_labels = 2
    cfg._attn_implementation = a.attn
    model = BertForSequenceClassification(cfg)
dev = torch.device(a.device)
model.to(dev)
ids = torch.randint(1000, 21000, (a.batch, a.seq), device=dev)
mask = torch.ones_like(ids)
labels = torch.zeros(a.batch, dtype=torch.long, device=dev)
autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16)
opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)


def step():
    if a.mode == "forward":
        model.eval()
        with torch.inference_mode(), autocast:
            return model(input_ids=ids, attention_mask=mask).logits[0, 0].item()
    model.train()
    with autocast:
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
    opt.zero_grad()
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return out.loss.item()


secs = seconds_per_call(step, a.iters)
print(json.dumps({"impl": "pytorch " + torch.__version__, "device": str(dev), "tf32": a.tf32, "bf16": a.bf16,
                  "attn": a.attn, "hidden": model.config.hidden_size, "layers": model.config.num_hidden_layers,
                  "mode": a.mode, "batch": a.batch, "seq": a.seq,
                  "threads": a.threads, "seconds_per_step": round(secs, 4),
                  "sentences_per_s": round(a.batch / secs, 1), "tokens_per_s": round(a.batch * a.seq / secs)}))
