"""The language-model run config: the core sections plus a GPT-2 model, a text source and a text probe."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmprobe.config import OptimConfig, SharpnessConfig, TraceConfig, TrainConfig, domain_field


@dataclass
class ModelConfig:
    """A GPT-2 architecture (transformers.GPT2Config); vocab size comes from the tokenizer."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    init_from: str | None = None  # a save_pretrained folder (ours or any GPT-2) to start from
    # attention kernel of the training forward; Hessian products always use the math SDPA kernel
    attn_implementation: str = field(default="sdpa", metadata={"choices": ("sdpa", "eager", "flash_attention_2")})


@dataclass
class DataConfig:
    """Where tokens come from and how they are cut into blocks."""

    source: str = "sample"  # "sample", "openwebtext", or a local .txt/.jsonl file or folder
    tokenizer: str = "bpe-8192"  # "gpt2", "bpe-<N>" (trained on the source), or a folder
    block_size: int = 128
    val_fraction: float = 0.05
    max_tokens: int | None = None  # cap on tokens read (needed for streamed corpora held in memory)
    cache_dir: str | None = None  # default: $LMPROBE_CACHE or ~/.cache/lmprobe
    # "memory": int32 tokens in RAM; "mmap": tokenised once into uint16/uint32 files in the cache and
    # memory-mapped (flat memory at any corpus size; the same blocks)
    storage: str = field(default="memory", metadata={"choices": ("memory", "mmap")})
    num_proc: int | None = None  # processes tokenising into the mmap store (None: the CPUs, at most 8)


@dataclass
class LMTraceConfig(TraceConfig):
    """The text probe: every (or some) next-token position of held-out sequences."""

    n_sequences: int = 64  # probe sequences drawn from the validation split
    positions_per_sequence: int | None = None  # None: every position of each sequence


@dataclass
class LMConfig:
    """Everything `cli/train_lm.py` needs."""

    domain: str = domain_field("lm")
    name: str | None = None  # run name under out_dir; default: <config stem>-<timestamp>
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trace: LMTraceConfig = field(default_factory=LMTraceConfig)
    sharpness: SharpnessConfig = field(default_factory=SharpnessConfig)
