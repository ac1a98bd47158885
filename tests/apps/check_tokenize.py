"""Runs apps/tokenize on the tokenizer fixtures (single texts and tab-separated pairs) and
checks every output line against transformers' ids. Usage: check_tokenize.py TOKENIZE FIXTURES VOCAB"""
import json
import subprocess
import sys

exe, fixtures, vocab = sys.argv[1:4]


def rows(name):
    with open(f"{fixtures}/{name}", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run(args, lines):
    out = subprocess.run([exe, "--vocab", vocab, *args], input="\n".join(lines) + "\n", capture_output=True,
                         text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


failures = 0
# Texts with a newline or tab cannot travel as one line; the C++ tests cover those.
single = [r for r in rows("single.jsonl") if "\n" not in r["text"] and "\t" not in r["text"] and "\r" not in r["text"]]
for r, got in zip(single, run([], [r["text"] for r in single])):
    if got["input_ids"] != r["input_ids"]:
        failures += 1
        print("mismatch:", json.dumps(r["text"]), got["input_ids"], r["input_ids"])
pairs = [r for r in rows("pairs_truncated.jsonl") if r["max_length"] == 16 and
         not any(c in r["text"] + r["text_pair"] for c in "\n\t\r")]
for r, got in zip(pairs, run(["--pairs", "--max-len", "16"], [r["text"] + "\t" + r["text_pair"] for r in pairs])):
    if got["input_ids"] != r["input_ids"] or got["token_type_ids"] != r["token_type_ids"]:
        failures += 1
        print("mismatch:", json.dumps(r["text"]), json.dumps(r["text_pair"]), got, r["input_ids"])
print(f"{len(single) + len(pairs) - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
