"""Training text for lmprobe's language models: sources, tokenizers and packed token blocks.

    from lmprobe.lm.data import load_tokenizer, prepare_lm_data, iter_documents
    tok = load_tokenizer("bpe-8192")                    # or "gpt2", or a local folder
    data = prepare_lm_data("sample", tok, block_size=128, val_fraction=0.05, seed=0)
    data = open_token_store("sample", tok, block_size=128, val_fraction=0.05, seed=0)  # same blocks, memory-mapped

Sources are "sample" (bundled, offline), "openwebtext" (streamed from the hub) or local
.txt/.jsonl files and folders; see lmprobe.lm.data.corpora.
"""

from lmprobe.lm.data.corpora import OPENWEBTEXT_DATASET, SAMPLE_CORPUS, iter_documents, source_fingerprint
from lmprobe.lm.data.packing import PackedData, prepare_lm_data, unigram_entropy_nats
from lmprobe.lm.data.store import open_token_store
from lmprobe.lm.data.tokenizer import GPT2_DIR, load_tokenizer

__all__ = [
    "GPT2_DIR",
    "OPENWEBTEXT_DATASET",
    "SAMPLE_CORPUS",
    "PackedData",
    "iter_documents",
    "load_tokenizer",
    "open_token_store",
    "prepare_lm_data",
    "source_fingerprint",
    "unigram_entropy_nats",
]
