"""The domain seam: runs record their domain, analysis opens them through it, the core never imports vision."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lmprobe.analysis.view_base import RunViewBase
from lmprobe.cli import main as lmprobe_main
from lmprobe.domain import Domain, domain_of, get_domain, open_view, register_domain, view_probe_losses
from lmprobe.run import locate
from lmprobe.trace import read_trace
from lmprobe.train.checkpoint import read_info
from lmprobe.train.train_sample import read_train_sample

ROOT = Path(__file__).resolve().parent.parent


def test_entry_points_resolve_the_text_domain():
    domain = get_domain("lm")
    assert domain.name == "lm" and "gpt2" in domain.model_types
    from lmprobe.lm.config import LMConfig

    assert domain.config_class is LMConfig


def test_a_run_records_its_domain(tiny_run):
    assert yaml.safe_load((tiny_run / "config.yaml").read_text())["domain"] == "lm"
    assert read_info(tiny_run / "checkpoints" / "step-000016")["domain"] == "lm"
    assert domain_of(locate(tiny_run)) == "lm"


def test_a_run_without_a_domain_opens_as_text(tiny_run, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["domain"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert open_view(run).domain == "lm"


def test_an_unknown_domain_is_one_line(tiny_run, tmp_path, capsys):
    run = tmp_path / "alien"
    shutil.copytree(tiny_run, run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["domain"] = "proteins"
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert lmprobe_main(["mine", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "'proteins' is not installed" in err and "lmprobe.domains" in err and "\n" not in err


def test_the_view_computes_the_recorded_trace_row(tiny_run):
    view = open_view(tiny_run)
    trace = read_trace(tiny_run)
    row = view_probe_losses(view, view.load_model(tiny_run / "checkpoints" / "step-000008"))
    np.testing.assert_allclose(row, trace.losses[list(trace.steps).index(8)], rtol=1e-4, atol=1e-5)


def test_training_sample_is_disjoint_from_the_probe_and_reused_by_sharpness(tiny_run):
    """Lookahead and Hessian batches come from the training split saved at the start, never the corpus."""
    sample = read_train_sample(tiny_run / "probe")
    probe = np.load(tiny_run / "probe" / "probe.npz")["sequences"]
    probe_rows = {tuple(r) for r in probe.tolist()}
    for batch in sample.hessian + sample.lookahead:
        assert not probe_rows & {tuple(r) for r in batch["input_ids"].tolist()}
    view = open_view(tiny_run)
    assert torch.equal(view.hessian_batches()[0]["input_ids"], sample.hessian[0]["input_ids"])
    regrouped = view.train_batches(3, 4)
    assert len(regrouped) == 3 and regrouped[0]["input_ids"].shape[0] == 4


def test_core_commands_never_import_vision(tiny_run):
    """Importing lmprobe and mining a text run leaves `vision` out of sys.modules."""
    code = (
        "import sys, lmprobe, lmprobe.cli, lmprobe.commands.mine, lmprobe.commands.sharpness, "
        "lmprobe.commands.plot, lmprobe.analysis.losses, lmprobe.domain, lmprobe.mining, lmprobe.hessian\n"
        f"assert lmprobe.cli.main(['mine', {str(tiny_run)!r}, '--json']) == 0\n"
        "leaked = sorted(m for m in sys.modules if m == 'vision' or m.startswith('vision.'))\n"
        "assert not leaked, leaked\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


# ----------------------------------------------------------------------------- a third-party domain
class ToyProbe:
    """Four points on a line; keys: target = sign of the label, feature = which side."""

    x = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]])
    y = torch.tensor([[-1.0], [1.0], [-1.0], [1.0]])
    n_examples = 4

    def keys(self):
        return {"target": np.array([0, 1, 0, 1]), "feature": np.array([0, 0, 1, 1])}

    def n_batches(self, batch_size):
        return 1

    def batch(self, index, batch_size):
        return {"x": self.x, "y": self.y}

    def losses(self, model, batch):
        return ((model(batch["x"]) - batch["y"]) ** 2).ravel()

    def save(self, probe_dir):
        Path(probe_dir).mkdir(parents=True, exist_ok=True)


class ToyView(RunViewBase):
    domain = "plugin"
    domain_groupings = ("target",)

    def describe(self, index):
        return f"x={float(ToyProbe.x[index]):+.0f}", f"{float(ToyProbe.y[index]):+.0f}"

    def domain_key_label(self, name, value):
        return f"{name}={value}"

    def load_model(self, checkpoint):
        model = torch.nn.Linear(1, 1)
        model.load_state_dict(torch.load(Path(checkpoint) / "weights.pt", weights_only=True))
        return model

    def loss(self, model, batch):
        return ((model(batch["x"]) - batch["y"]) ** 2).mean()


def test_a_third_party_domain_plugs_in_without_editing_lmprobe(tmp_path, capsys):
    """A run directory made by another domain is opened through that domain: lmprobe sharpness works on it."""
    from lmprobe.train.checkpoint import save_checkpoint
    from lmprobe.train.train_sample import write_train_sample

    register_domain(Domain("plugin", dict, dict, lambda located: ToyView(located, located.analysed_checkpoint(), ToyProbe()),
                           lambda ckpt, data: None))
    run = tmp_path / "toy-run"
    (run / "probe").mkdir(parents=True)
    (run / "config.yaml").write_text("domain: plugin\noptim: {name: gd, lr: 0.1}\n")
    model = torch.nn.Linear(1, 1)
    torch.nn.init.constant_(model.weight, 0.5)

    def write(folder):
        torch.save(model.state_dict(), folder / "weights.pt")
        (folder / "config.json").write_text("{}")

    save_checkpoint(run, 1, write, info={"domain": "plugin", "lr": 0.1})
    write_train_sample(run / "probe", [{"x": ToyProbe.x, "y": ToyProbe.y}], [])
    assert lmprobe_main(["sharpness", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the loss is mean((w x + b - y)^2): its Hessian is 2 E[[x^2, x], [x, 1]] = [[5, 0], [0, 2]]
    assert report["sharpness"] == pytest.approx(5.0, rel=1e-4)
    assert report["gd_threshold"] == pytest.approx(20.0)


def test_a_run_whose_checkpoints_are_gone_still_mines_its_trace(tiny_run, tmp_path, capsys):
    run = tmp_path / "no-checkpoints"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "checkpoints")
    assert lmprobe_main(["mine", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == list(range(0, 17, 2))
    assert lmprobe_main(["sharpness", str(run)]) == 2
    assert "has no checkpoint yet" in capsys.readouterr().err
