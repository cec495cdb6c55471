"""Study configs: both shipped configs load on every profile; each kind of typo fails with one line
naming the file and the key, before any work (the CLI does not even import torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from silentzone.config import ConfigError, load
from silentzone.paths import CONFIGS, REPO

STUDIES = ["smollm2", "gemma3"]


@pytest.mark.parametrize("study", STUDIES)
@pytest.mark.parametrize("profile", ["smoke", "default", "full"])
def test_shipped_configs_load(study, profile):
    s = load(CONFIGS / f"{study}.yaml", profile)
    assert s.study == study and s.profile_name == profile
    assert s.zone.threshold == 0.02 and s.zone.definition == "relative"
    if profile == "smoke":
        assert len(s.quants) == 5 and s.profile.n_items == 20  # 4 quants + one that fails by design
    else:
        assert len(s.quants) >= 28


def test_profiles_change_the_config_hash_and_same_input_same_hash():
    a = load(CONFIGS / "smollm2.yaml", "smoke")
    assert a.config_hash == load(CONFIGS / "smollm2.yaml", "smoke").config_hash
    assert a.config_hash != load(CONFIGS / "smollm2.yaml", "default").config_hash


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((CONFIGS / "smollm2.yaml").read_text())
    mutate(raw)
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


BAD = [
    # (mutation, text the one-line error must contain)
    (lambda r: r.update(contxts=[256]), "contxts: unknown key"),
    (lambda r: r["zone"].update(threshold="2%"), "zone.threshold: must be float"),
    (lambda r: r["reference"].update(model="/no/such/model.gguf"), "reference.model: model file"),
    (lambda r: r["reference"].update(model="embedded:llama-7b"), "unknown embedded model"),
    (lambda r: r["quants"].append({"id": "x", "method": "exl2", "bits": 4}), "unknown quant method 'exl2'"),
    (lambda r: r["quants"].append({"id": "y", "method": "gguf", "type": "Q4_K_X"}), "quants[y].type: must be one of"),
    (lambda r: r["quants"].append({"id": "z", "method": "gptq", "bits": 4, "groupsize": 64}), "quants[z].groupsize: unknown parameter"),
    (lambda r: r["quants"].append({"id": "w", "method": "gptq"}), "missing parameter 'bits'"),
    (lambda r: r["quants"].append({"id": "Q8_0", "method": "gguf", "type": "Q8_0"}), "duplicate id"),
    (lambda r: r["profiles"]["smoke"].update(quants=["Q9_9"]), "profiles.smoke.quants: unknown value 'Q9_9'"),
    (lambda r: r["profiles"]["smoke"].update(n_items="20"), "profiles.smoke.n_items: must be int"),
    (lambda r: r.update(tasks=["sciq", "mmlu_pro"]), "tasks: unknown value 'mmlu_pro'"),
    (lambda r: r.pop("reference"), "missing key"),
    # values of the right type out of range (#21)
    (lambda r: r["zone"].update(threshold=-1), "zone.threshold: must be > 0 for definition relative, got -1.0"),
    (lambda r: r["zone"].update(threshold=0), "zone.threshold: must be > 0 for definition relative, got 0.0"),
    (lambda r: r["zone"].update(definition="absolute", threshold=-0.5), "zone.threshold: must be > 0 for definition absolute"),
    (lambda r: r["zone"].update(definition="bpw", threshold=0, sweep=[4.0]), "zone.threshold: must be > 0 for definition bpw"),
    (lambda r: r["zone"].update(definition="kld_quantile", threshold=1.5, sweep=[0.5]),
     "zone.threshold: must be in (0, 1] for definition kld_quantile (a quantile), got 1.5"),
    (lambda r: r["zone"].update(definition="kld_quantile", threshold=1, sweep=[0.5, 1.2]), "zone.sweep[1]: must be in (0, 1]"),
    (lambda r: r["zone"].update(threshold=float("nan")), "zone.threshold: must be a finite number, got nan"),
    (lambda r: r["zone"].update(sweep=[0.01, -0.02]), "zone.sweep[1]: must be > 0 for definition relative, got -0.02"),
    (lambda r: r["profiles"]["smoke"].update(n_items=0), "profiles.smoke.n_items: must be > 0, got 0"),
    (lambda r: r["profiles"]["default"].update(bootstrap=-5), "profiles.default.bootstrap: must be > 0, got -5"),
    (lambda r: r["profiles"]["full"].update(holdout_splits=0), "profiles.full.holdout_splits: must be > 0"),
    (lambda r: r["profiles"]["smoke"].update(calib_samples=0), "profiles.smoke.calib_samples: must be > 0"),
    (lambda r: r["profiles"]["smoke"].update(corpus_tokens=0), "profiles.smoke.corpus_tokens: must be > 0"),
    (lambda r: r.update(contexts=[256, 0]), "contexts[1]: must be > 0 tokens, got 0"),
    (lambda r: r["seeds"].update({"global": -1}), "seeds.global: must be >= 0, got -1"),
]


@pytest.mark.parametrize("mutate,expected", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_config_fails_with_one_line(tmp_path, mutate, expected):
    p = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as e:
        load(p, "smoke")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(str(p) + ": ")
    assert expected in msg


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("study: x\nquants: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+: invalid YAML"):
        load(p)


def test_unknown_profile(tmp_path):
    with pytest.raises(ConfigError, match="no profile 'huge'"):
        load(CONFIGS / "smollm2.yaml", "huge")


def test_cli_validate_exit_status_and_no_torch(tmp_path):
    """`silentzone validate` on a typo: exit 2, exactly one stderr line, torch never imported."""
    p = _write(tmp_path, lambda r: r.update(contxts=[256]))
    code = ("import sys; from silentzone.cli import main; rc = main(['validate', sys.argv[1]]);"
            "assert 'torch' not in sys.modules, 'validate imported torch'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {p}: contxts: unknown key (expected one of "
                     "['contexts', 'corpora', 'description', 'fidelity', 'livecodebench', 'profiles', 'quants', 'reference', "
                     "'seeds', 'study', 'tasks', "
                     "'zone'])"]
    ok = subprocess.run([sys.executable, "-m", "silentzone.cli", "validate",
                         str(CONFIGS / "gemma3.yaml")], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0 and "ok (study gemma3" in ok.stdout


@pytest.mark.parametrize("value", [0.02, 1e-9, 2.0])
def test_positive_thresholds_are_accepted(tmp_path, value):
    p = _write(tmp_path, lambda r: r["zone"].update(threshold=value))
    assert load(p, "smoke").zone.threshold == value


def test_cli_validate_rejects_a_negative_threshold(tmp_path, capsys):
    """The issue's case: `silentzone validate` accepted zone.threshold: -1."""
    from silentzone.cli import main
    p = _write(tmp_path, lambda r: r["zone"].update(threshold=-1))
    capsys.readouterr()
    assert main(["validate", str(p)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: {p}: zone.threshold: must be > 0 for definition relative, got -1.0\n"
