"""Benchmark: SFT data preparation throughput, and the padding that packing saves.

1. Conversion + filtering + tokenisation of every file in shared/data/instruct (GPT-2 tokenizer with the
   Harmony tokens), in examples/s. Baseline, in the same run: transformers' own
   `apply_chat_template(..., return_assistant_tokens_mask=True)` on the same conversations, which gives the
   same labels (checked here) and is the library way to get an assistant mask.
2. The share of positions that are padding, with packing (best-fit decreasing into blocks) and without
   (each batch padded to its longest conversation), for several block sizes. Target: packing below 5%.

    python bench/sft.py [--batch-size 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table  # noqa: E402

from gpt3dev.core import data_path  # noqa: E402
from gpt3dev.sft import Filters, collate, load_conversations, pack, padding_share, tokenize_chats, with_chat_format  # noqa: E402


def positions(batches) -> int:
    "Token positions in `batches`, padding included."
    return sum(b["input_ids"].numel() for b in batches)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    tok = with_chat_format(AutoTokenizer.from_pretrained(data_path("gpt2-tokenizer")))
    specs = sorted(str(p) for p in data_path("instruct").iterdir())
    print(f"machine: {machine()}\n")

    t = time.perf_counter()
    convs, stats = load_conversations(specs, filters=Filters(dedup=False))
    t_convert = time.perf_counter() - t
    rows = sum(st["rows"] for st in stats.values())
    t = time.perf_counter()
    ours = [
        e for i in range(0, len(convs), 1024) for e in tokenize_chats(tok, [c["messages"] for c in convs[i : i + 1024]])
    ]
    t_tok = time.perf_counter() - t
    t = time.perf_counter()
    theirs = [
        tok.apply_chat_template(c["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        for c in convs
    ]
    t_base = time.perf_counter() - t
    for a, b in zip(ours, theirs):  # the same tokens, and the same labelled positions
        assert a["input_ids"] == list(b["input_ids"]) and [l != -100 for l in a["labels"]] == [
            bool(m) for m in b["assistant_masks"]
        ]
    n = len(convs)
    print(
        f"{rows} rows in {len(specs)} files -> {n} conversations; {sum(len(e['input_ids']) for e in ours):,} tokens, "
        f"{sum(sum(l != -100 for l in e['labels']) for e in ours):,} labelled\n"
    )
    print(
        table(
            [
                {"stage": "read + convert + filter", "examples/s": f"{rows / t_convert:,.0f}", "ratio": ""},
                {
                    "stage": "tokenize_chats (labels from offsets, batches of 1024)",
                    "examples/s": f"{n / t_tok:,.0f}",
                    "ratio": f"{t_base / t_tok:.2f}x",
                },
                {
                    "stage": "baseline: apply_chat_template + assistant mask",
                    "examples/s": f"{n / t_base:,.0f}",
                    "ratio": "1.00x",
                },
                {
                    "stage": "all of ours (convert, filter, tokenize)",
                    "examples/s": f"{rows / (t_convert + t_tok):,.0f}",
                    "ratio": "",
                },
            ],
            ["stage", "examples/s", "ratio"],
        )
    )

    print(f"\npadding share of all positions (batches of {args.batch_size}):\n")
    out = []
    for block in (256, 512, 1024):
        exs = tokenize_chats(tok, [c["messages"] for c in convs], max_length=block)
        exs = [e for e in exs if any(l != -100 for l in e["labels"])]
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(exs), generator=g).tolist()
        padded = [
            collate([exs[i] for i in order[j : j + args.batch_size]], 0) for j in range(0, len(order), args.batch_size)
        ]
        t = time.perf_counter()
        blocks = pack(exs, block, 0)
        t_pack = time.perf_counter() - t
        packed = [collate(blocks[j : j + args.batch_size], 0) for j in range(0, len(blocks), args.batch_size)]
        p_pad, p_pack = padding_share(padded), padding_share(packed)
        out.append(
            {
                "block": block,
                "conversations": len(exs),
                "padded: padding": f"{p_pad:.1%}",
                "packed: blocks": len(blocks),
                "packed: padding": f"{p_pack:.1%}",
                "positions, packed / padded": f"{positions(packed) / positions(padded):.2f}x",
                "pack time": f"{t_pack * 1000:.0f} ms",
                "target < 5%": "met" if p_pack < 0.05 else "MISSED",
            }
        )
    print(table(out, list(out[0])))


if __name__ == "__main__":
    main()
