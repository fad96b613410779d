import pytest

from lmprobe.config import load_config, save_config
from lmprobe.lm.config import LMConfig
from lmprobe.errors import LmprobeError


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 1.0e-3, name: sgd}\ntrain: {steps: 5}\n")
    cfg = load_config(LMConfig, path, ["optim.lr=3e-4", "trace.every=0", "model.init_from=null"])
    assert cfg.optim.name == "sgd"
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.train.steps == 5 and cfg.trace.every == 0
    assert cfg.model.init_from is None


def test_int_is_accepted_for_float():
    assert load_config(LMConfig, None, ["optim.lr=1"]).optim.lr == 1.0


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(LmprobeError) as err:
        load_config(LMConfig, None, ["optim.lrr=1e-3"])
    message = str(err.value)
    assert "optim.lrr" in message and "lr" in message and "\n" not in message


def test_unknown_section():
    with pytest.raises(LmprobeError, match="unknown config key 'optimizer'"):
        load_config(LMConfig, None, ["optimizer.lr=1"])


@pytest.mark.parametrize("override, expected", [
    ("train.steps=many", "train.steps' expects int"),
    ("optim.name=lion", "must be one of adamw, sgd, gd"),
    ("train.steps=true", "expects int"),
    ("optim.lr", "key.sub=value"),
])
def test_bad_values(override, expected):
    with pytest.raises(LmprobeError, match=expected):
        load_config(LMConfig, None, [override])


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(LmprobeError, match="does not exist"):
        load_config(LMConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: [1,\n")
    with pytest.raises(LmprobeError, match="not valid YAML"):
        load_config(LMConfig, bad)


def test_round_trip(tmp_path):
    cfg = load_config(LMConfig, None, ["optim.lr=2e-3", "data.max_tokens=1000"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(LMConfig, tmp_path / "config.yaml") == cfg


def test_shipped_configs_load_with_their_domains_config_class():
    """Every YAML under configs/<domain>/ validates as that domain's config (toy configs excepted)."""
    from pathlib import Path

    from lmprobe.domain import get_domain

    checked = 0
    for folder in sorted((Path(__file__).parent.parent / "configs").iterdir()):
        for path in sorted(folder.glob("*.yaml")):
            cfg = load_config(get_domain(folder.name).config_class, path)
            assert cfg.domain == folder.name
            checked += 1
    assert checked >= 9


def test_a_config_of_another_domain_is_refused():
    from pathlib import Path

    from vision.config import VisionConfig

    path = Path(__file__).parent.parent / "configs" / "lm" / "default.yaml"
    with pytest.raises(LmprobeError, match="unknown config key 'model.n_embd'"):
        load_config(VisionConfig, path)
