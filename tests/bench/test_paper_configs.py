"""The paper configs list the paper's five benchmark families and validate offline (dry run);
the livecodebench section is checked on load; the absent release file fails in one line."""

from __future__ import annotations

import pytest

from silentzone.bench import data as D
from silentzone.bench import livecodebench as L
from silentzone.bench import tasks as T
from silentzone.cli import main as cli_main
from silentzone.config import ConfigError, livecodebench_file, load
from silentzone.paths import CONFIGS

PAPER = ("paper-qwen3.6-35b-a3b.yaml", "paper-devstral-small-2-24b.yaml")
FAMILIES = {"mmlu", "livecodebench", "bfcl", "ifeval", "math500"}


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_validate_with_the_five_families(name, capsys):
    for profile in ("default", "gpu", "community", "smoke"):
        study = load(CONFIGS / name, profile)
        assert study.livecodebench.file.endswith("test6.jsonl")
        if profile != "smoke":  # smoke runs a subset on purpose
            assert FAMILIES <= set(study.tasks)
    assert all(t in T.TASKS for t in load(CONFIGS / name).tasks)
    assert cli_main(["validate", str(CONFIGS / name)]) == 0
    assert "ok (study" in capsys.readouterr().out


@pytest.mark.parametrize("name", PAPER)
def test_paper_config_absent_release_file_fails_in_one_line(name):
    study = load(CONFIGS / name)
    path = livecodebench_file(study)
    if path.exists():
        pytest.skip(f"{path} exists here")
    L.configure(path, study.livecodebench.start, study.livecodebench.end)
    try:
        with pytest.raises(D.DataError) as e:
            T.get("livecodebench").items(5)
    finally:
        L.configure("")
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def _write(tmp_path, lcb: str, tasks="[sciq, livecodebench]"):
    p = tmp_path / "s.yaml"
    p.write_text(f"study: s\ndescription: d\nreference: {{model: embedded:smollm2-135m-instruct}}\n"
                 f"corpora: [wiki]\ncontexts: [256]\ntasks: {tasks}\n{lcb}"
                 "quants:\n  - {id: Q8_0, method: gguf, type: Q8_0}\nprofiles:\n  default: {}\n")
    return p


def test_livecodebench_section_is_checked_on_load(tmp_path):
    ok = load(_write(tmp_path, "livecodebench: {file: /nowhere/test6.jsonl, start: '2025-01-01'}\n"))
    assert ok.livecodebench.start == "2025-01-01"
    for lcb, msg in (("", "livecodebench.file: tasks include livecodebench"),
                     ("livecodebench: {file: x.jsonl, start: 2025/01/01}\n", "livecodebench.start: must be a date"),
                     ("livecodebench: {file: x.jsonl, start: '2025-02-01', end: '2025-01-01'}\n", "is after end"),
                     ("livecodebench: {file: x.jsonl, begin: '2025-01-01'}\n", "livecodebench.begin: unknown key")):
        with pytest.raises(ConfigError, match=msg) as e:
            load(_write(tmp_path, lcb))
        assert "\n" not in str(e.value)
    # without the task, no file is needed, and the config hash does not carry the section
    a = load(_write(tmp_path, "", "[sciq]"))
    assert "livecodebench" not in __import__("silentzone.config", fromlist=["as_dict"]).as_dict(a)
