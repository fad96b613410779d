"""Training and probe-evaluation throughput, side by side in one run.

Compares, on the same model size, batch, data and thread count:
  * our training step (lmprobe's Trainer: Accelerate + transformers GPT2LMHeadModel + AdamW,
    gradient clipping) against a minimal plain-PyTorch GPT loop written here, nanoGPT-style;
  * probe evaluation (the forward-only, batched trace recording) against training.
Timings alternate between the contenders in rounds and report medians, so drift in machine
load hits both alike.

    python benchmarks/train_throughput.py [--steps 10] [--rounds 5] [--write]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmprobe.config import load_config
from lmprobe.lm.config import LMConfig

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- plain GPT
class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, block: int, d: int, layers: int, heads: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def plain_step(model, optimizer, batch: torch.Tensor, clip: float) -> float:
    logits = model(batch)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


# ----------------------------------------------------------------------------- harness
def timed(fn, repeats: int) -> float:
    start = time.perf_counter()
    for i in range(repeats):
        fn(i)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs/lm/default.yaml"))
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--write", action="store_true", help="record the figures in BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from accelerate import Accelerator
    from rich.console import Console
    from rich.table import Table

    from lmprobe.lm.task import LMTask
    from lmprobe.train.loop import LoopConfig, Trainer

    cfg: LMConfig = load_config(LMConfig, args.config, ["trace.every=1"])
    task = LMTask(cfg)
    run_dir = Path(tempfile.mkdtemp(prefix="lmprobe-bench-"))
    trainer = Trainer(task, LoopConfig(cfg.optim, cfg.train, cfg.trace, cfg.sharpness), run_dir,
                      Accelerator(cpu=True), show_progress=False)
    trainer._build(resume=False)

    m = cfg.model
    torch.manual_seed(0)
    plain = PlainGPT(len(task.tokenizer), cfg.data.block_size, m.n_embd, m.n_layer, m.n_head)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
                                  weight_decay=cfg.optim.weight_decay, foreach=True)
    batches = [task.train_batch(trainer.sampler.global_batch(s, 0, 1))["input_ids"] for s in range(args.steps)]

    def ours(i: int) -> None:
        trainer._train_step(i)
        trainer._clip_and_step(measure=False)

    def theirs(i: int) -> None:
        plain_step(plain, plain_opt, batches[i], cfg.optim.grad_clip or math.inf)

    def probe(i: int) -> None:
        trainer.record_trace(i)

    tokens_per_step = cfg.train.batch_size * cfg.data.block_size
    probe_tokens = len(task.probe.sequences) * cfg.data.block_size
    ours(0), theirs(0), probe(0)  # warm-up
    rates = {"ours": [], "plain": [], "probe": []}
    for _ in range(args.rounds):
        rates["ours"].append(args.steps * tokens_per_step / timed(ours, args.steps))
        rates["plain"].append(args.steps * tokens_per_step / timed(theirs, args.steps))
        rates["probe"].append(2 * probe_tokens / timed(probe, 2))
    med = {k: statistics.median(v) for k, v in rates.items()}
    n_params = sum(p.numel() for p in plain.parameters())

    table = Table(title=f"training throughput ({n_params / 1e6:.2f}M params, batch {cfg.train.batch_size}"
                        f" x {cfg.data.block_size} tokens, {args.threads} threads)")
    for col in ("what", "tokens/s (median)", "ratio"):
        table.add_column(col)
    table.add_row("plain PyTorch GPT loop", f"{med['plain']:,.0f}", "1.00")
    table.add_row("lmprobe training step", f"{med['ours']:,.0f}", f"{med['ours'] / med['plain']:.2f} x plain")
    table.add_row("lmprobe probe evaluation", f"{med['probe']:,.0f}", f"{med['probe'] / med['ours']:.2f} x training")
    Console().print(table)

    if args.write:
        from record import write_section  # benchmarks/record.py, beside this script

        write_section("Training throughput", [
            f"Model {n_params / 1e6:.2f}M parameters ({m.n_layer} layers, d={m.n_embd}, vocab {len(task.tokenizer)}),"
            f" batch {cfg.train.batch_size} x {cfg.data.block_size} tokens, {args.threads} threads,"
            f" medians of {args.rounds} alternating rounds of {args.steps} steps.",
            "",
            "| what | tokens/s | ratio | target |",
            "|---|---|---|---|",
            f"| plain PyTorch GPT loop (nanoGPT-style) | {med['plain']:,.0f} | 1.00 | |",
            f"| lmprobe training step (Accelerate + GPT2LMHeadModel) | {med['ours']:,.0f} |"
            f" {med['ours'] / med['plain']:.2f} x plain | >= 1.0 |",
            f"| lmprobe probe evaluation (forward-only, batched) | {med['probe']:,.0f} |"
            f" {med['probe'] / med['ours']:.2f} x training | >= 3 |",
        ], command="python benchmarks/train_throughput.py --write")


if __name__ == "__main__":
    main()
