"""Checkpoints are publishable Hub folders: they load in a text-generation pipeline, carry a model
card naming the run's config and metrics, keep the resume state apart, and `lmprobe push` fails
offline with one line."""

from __future__ import annotations

import json

import pytest
import yaml

from lmprobe.cli import main as cli_main
from lmprobe.commands.push import upload_patterns
from lmprobe.model_card import read_card_metadata
from tests.conftest import TINY_STEPS


@pytest.fixture(scope="module")
def last_checkpoint(tiny_run):
    return tiny_run / "checkpoints" / f"step-{TINY_STEPS:06d}"


def test_model_folder_is_what_the_hub_expects(last_checkpoint):
    config = json.loads((last_checkpoint / "config.json").read_text())
    assert config["use_cache"] is True  # generation reuses its cache (training passes use_cache=False)
    tokenizer_config = json.loads((last_checkpoint / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == config["n_positions"] == 32
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(last_checkpoint), local_files_only=True)
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id == tokenizer.eos_token_id
    generation = json.loads((last_checkpoint / "generation_config.json").read_text())
    assert generation["pad_token_id"] == tokenizer.eos_token_id
    # the resume state lives apart, and is not what a user uploads
    # (Accelerate's save_state: optimizer and RNGs, without a second copy of the weights)
    assert sorted(p.name for p in (last_checkpoint / "resume").iterdir()) == ["optimizer.bin", "random_states_0.pkl"]
    assert not (last_checkpoint / "training_state.pt").exists()
    uploaded = upload_patterns(last_checkpoint)
    assert "model.safetensors" in uploaded and "README.md" in uploaded
    assert not any(name.startswith("resume/") for name in uploaded)


def test_model_card_names_the_config_and_metrics(tiny_run, last_checkpoint):
    meta = read_card_metadata(last_checkpoint)
    assert meta["library_name"] == "transformers" and "lmprobe" in meta["tags"]
    assert meta["pipeline_tag"] == "text-generation"
    card = (last_checkpoint / "README.md").read_text()
    saved = yaml.safe_load((tiny_run / "config.yaml").read_text())
    body = yaml.safe_load(card.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert body == saved  # the run's whole resolved config
    from lmprobe.train.metrics_log import read_metrics

    final = read_metrics(tiny_run / "metrics.jsonl")[-1]
    assert f"| val_loss | {final['val_loss']:.6g} |" in card and f"| loss | {final['loss']:.6g} |" in card


def test_pipeline_generates_up_to_the_context_and_truncates_longer_prompts(last_checkpoint, one_thread):
    from transformers import AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(str(last_checkpoint), local_files_only=True)
    generate = pipeline("text-generation", model=str(last_checkpoint), tokenizer=tokenizer)
    words = " ".join(["the"] * 200)
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]

    def new_tokens(prompt_length: int, **kwargs) -> int:
        out = generate(tokenizer.decode(ids[:prompt_length]), do_sample=False, return_full_text=False, **kwargs)
        return len(tokenizer(out[0]["generated_text"], add_special_tokens=False)["input_ids"])

    # the pipeline's defaults (256 new tokens) stop where the 32 positions end
    assert 1 <= new_tokens(10) <= 22
    assert 1 <= new_tokens(28) <= 4  # a prompt that nearly fills the context
    assert new_tokens(28, max_new_tokens=4) >= 1
    # a prompt longer than the context: a message naming the limit, not an index error
    with pytest.raises(ValueError, match="max_length"):
        new_tokens(40)
    # the tokenizer knows the limit and keeps the end of the prompt; "hole" makes room for new tokens
    long_prompt = tokenizer.decode(ids[:100])
    truncated = tokenizer(long_prompt, truncation=True)["input_ids"]
    assert len(truncated) == 32 and truncated == tokenizer(long_prompt)["input_ids"][-32:]
    assert new_tokens(100, max_new_tokens=4, handle_long_generation="hole") >= 1


def test_checkpoint_loads_through_the_run_view(tiny_run, last_checkpoint):
    from lmprobe.domain import open_view

    view = open_view(last_checkpoint)
    model = view.load_model(last_checkpoint)
    assert model.config.n_positions == 32 and not model.training


def test_push_offline_fails_with_one_line(last_checkpoint, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert cli_main(["push", "--checkpoint", str(last_checkpoint), "--repo-id", "someone/tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "HF_HUB_OFFLINE" in err


def test_version(capsys):
    from lmprobe import __version__

    with pytest.raises(SystemExit) as done:
        cli_main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"lmprobe {__version__}"


def test_a_gathered_state_dict_is_what_the_hub_folder_holds(tmp_path):
    """Under FSDP the trainer passes the gathered full weights: the folder holds them (tied head included)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from lmprobe.lm.task import publishable_tokenizer, save_publishable
    from lmprobe.lm.data.tokenizer import load_tokenizer

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=16, n_embd=8, n_layer=1, n_head=2))
    gathered = {name: torch.full_like(t, 0.5) for name, t in model.state_dict().items()}
    tokenizer = publishable_tokenizer(load_tokenizer("gpt2"), 16)
    save_publishable(model, tokenizer, tmp_path, state_dict=dict(gathered))  # save_pretrained edits its dict
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    assert torch.equal(loaded.transformer.h[0].mlp.c_fc.weight, gathered["transformer.h.0.mlp.c_fc.weight"])
    assert torch.equal(loaded.lm_head.weight, loaded.transformer.wte.weight)
    assert float(loaded.transformer.wte.weight.mean()) == 0.5

