"""silentzone gather-leases: a results directory from GPU leases' packed results (issue 19).

The leases here are tars built from the shipped default tables (data/smollm2/), split the way real
leases split a cohort; the expectation is those tables themselves. The last test gathers the real
leases committed under docs/performance/gpu/."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from silentzone.cli import main
from silentzone.config import load
from silentzone.paths import CONFIGS
from silentzone.workflow.leases import LeaseError, gather_leases

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "smollm2"
GPU = REPO / "docs" / "performance" / "gpu"


def _shipped():
    read = dict(keep_default_na=False, na_values=[""])
    return (pd.read_csv(DATA / "samples.csv", **read), pd.read_csv(DATA / "fidelity.csv", **read),
            pd.read_csv(DATA / "quants.csv", **read))


def _lease(path: Path, markers: dict, fidelity: dict, samples: dict, base="studies/smollm2/smoke/",
           provs: dict | None = None) -> Path:
    """A lease tar as perf/gpu/power_run.py packs one: markers {quant: dict}, fidelity {quant: frame},
    samples {(model, task): frame}, provs {(model, task): a samples table's provenance dict}."""
    def add(tar, name, data: bytes):
        info = tarfile.TarInfo(base + name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path, "w:xz") as tar:
        for q, m in markers.items():
            add(tar, f"wf/quants/{q}.json", json.dumps(m).encode())
        for q, f in fidelity.items():
            add(tar, f"fidelity/{q}/fidelity.csv", f.to_csv(index=False).encode())
        for (m, t), f in samples.items():
            add(tar, f"samples/{m}/{t}.csv", f.to_csv(index=False).encode())
        for (m, t), prov in (provs or {}).items():
            add(tar, f"samples/{m}/{t}.csv.provenance.json", json.dumps(prov).encode())
        add(tar, "logs/bench_Q8_0.log", b"a log: not a table")
    return path


@pytest.fixture
def parts():
    samples, fidelity, _ = _shipped()
    quants = pd.read_csv(DATA / "quants.csv", keep_default_na=False)  # empty strings stay strings, as in a marker
    marker = {r["quant_id"]: r for r in quants.to_dict("records")}
    table = {(m, t): g.reset_index(drop=True) for (m, t), g in samples.groupby(["model", "task"])}
    fid = {q: g.reset_index(drop=True) for q, g in fidelity.groupby("quant_id")}
    return samples, fid, marker, table


def test_two_leases_give_the_shipped_rows_of_the_finished_quants(tmp_path, parts, capsys):
    """Lease a: Q8_0 whole (scored on a CPU, its provenance says), Q4_0's sciq, the failed IQ2_XXS;
    lease b: Q4_0's piqa, Q2_K's sciq only. Both hold the reference. Gathered: Q8_0 and Q4_0 (from both
    leases) and the failed quant; Q2_K (half its bench) and bnb-nf4 (never made) are left out and
    named. A table whose provenance names no device (packed before the key existed) counts as cuda."""
    samples, fid, marker, table = parts
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    ref = {("reference", t): table[("reference", t)] for t in ("sciq", "piqa")}
    a = _lease(tmp_path / "a.tar.xz", {q: marker[q] for q in ("Q8_0", "Q4_0", "IQ2_XXS-noimat")},
               {q: fid[q] for q in ("Q8_0", "Q4_0")},
               {**ref, ("Q8_0", "sciq"): table[("Q8_0", "sciq")], ("Q8_0", "piqa"): table[("Q8_0", "piqa")],
                ("Q4_0", "sciq"): table[("Q4_0", "sciq")]},
               provs={("Q8_0", "sciq"): {"device": "cpu"}, ("Q8_0", "piqa"): {"device": "cpu"}})
    b = _lease(tmp_path / "b.tar.xz", {q: marker[q] for q in ("Q4_0", "Q2_K")}, {"Q2_K": fid["Q2_K"]},
               {**ref, ("Q4_0", "piqa"): table[("Q4_0", "piqa")], ("Q2_K", "sciq"): table[("Q2_K", "sciq")]})
    assert main(["gather-leases", "--study", "smollm2", "--profile", "smoke", "--out", str(tmp_path / "r"),
                 str(a), str(b)]) == 0
    err = capsys.readouterr().err
    assert "2 quant(s) left out: Q2_K (bench of 1 of 2 tasks); bnb-nf4 (not made on these leases)" in err
    info = json.loads((tmp_path / "r/leases.json").read_text())
    assert info["gathered"] == ["Q8_0", "Q4_0"] and info["failed"] == ["IQ2_XXS-noimat"]
    assert [x["file"] for x in info["leases"]] == ["a.tar.xz", "b.tar.xz"]
    assert info["bench_devices"] == {"cuda": ["reference/sciq", "reference/piqa", "Q4_0/sciq", "Q4_0/piqa"],
                                     "cpu": ["Q8_0/sciq", "Q8_0/piqa"]}
    got = pd.read_csv(tmp_path / "r/samples.csv", keep_default_na=False, na_values=[""])
    want = samples[samples["model"].isin(["reference", "Q8_0", "Q4_0"]) & samples["task"].isin(["sciq", "piqa"])]
    key = ["model", "task", "item_id"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                  want.sort_values(key).reset_index(drop=True)[got.columns], check_dtype=False)
    q = pd.read_csv(tmp_path / "r/quants.csv")
    assert sorted(q["quant_id"]) == ["IQ2_XXS-noimat", "Q4_0", "Q8_0"]
    assert set(pd.read_csv(tmp_path / "r/fidelity.csv")["quant_id"]) == {"Q8_0", "Q4_0"}
    prov = json.loads((tmp_path / "r/samples.csv.provenance.json").read_text())
    assert prov["leases"] == ["a.tar.xz", "b.tar.xz"] and prov["left_out"] == ["Q2_K", "bnb-nf4"]


def test_a_quant_scored_two_ways_is_left_out(tmp_path, parts):
    """Q8_0's SciQ in bfloat16 on the GPU, its PIQA in float32 on a CPU (their provenance says so): its
    composite would mix two deployments, so it is left out and the reason names both; Q4_0, scored one
    way, is gathered."""
    samples, fid, marker, table = parts
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    tables = {(m, t): table[(m, t)] for m in ("reference", "Q8_0", "Q4_0") for t in ("sciq", "piqa")}
    gpu = {"device": "cuda", "attention": {"engine": "transformers", "kv_cache": "bfloat16"}}
    cpu = {"device": "cpu", "attention": {"engine": "transformers", "kv_cache": "float32"}}
    a = _lease(tmp_path / "a.tar.xz", {q: marker[q] for q in ("Q8_0", "Q4_0")}, {q: fid[q] for q in ("Q8_0", "Q4_0")},
               tables, provs={("Q8_0", "sciq"): gpu, ("Q8_0", "piqa"): cpu, ("Q4_0", "sciq"): gpu, ("Q4_0", "piqa"): gpu})
    info = gather_leases(study, [a], tmp_path / "r")
    assert info["gathered"] == ["Q4_0"]
    assert info["left_out"]["Q8_0"] == "bench tables scored two ways: cuda bfloat16 (sciq); cpu float32 (piqa)"


def test_leases_that_do_not_fit_are_refused_in_one_line(tmp_path, parts):
    samples, fid, marker, table = parts
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    ref = {("reference", t): table[("reference", t)] for t in ("sciq", "piqa")}
    whole = {**ref, **{("Q8_0", t): table[("Q8_0", t)] for t in ("sciq", "piqa")}}
    a = _lease(tmp_path / "a.tar.xz", {"Q8_0": marker["Q8_0"]}, {"Q8_0": fid["Q8_0"]}, whole)
    other = dict(marker["Q8_0"], sha256="0" * 64)
    b = _lease(tmp_path / "b.tar.xz", {"Q8_0": other}, {}, {})
    with pytest.raises(LeaseError, match=r"b\.tar\.xz: quant Q8_0 is another file than in a\.tar\.xz"):
        gather_leases(study, [a, b], tmp_path / "r")
    moved = table[("reference", "sciq")].copy()
    moved.loc[3, "margin"] = moved.loc[3, "margin"] + 1e-9  # one margin, one ulp-scale move
    c = _lease(tmp_path / "c.tar.xz", {}, {}, {("reference", "sciq"): moved})
    with pytest.raises(LeaseError, match=r"c\.tar\.xz: samples/reference/sciq\.csv differs from a\.tar\.xz"):
        gather_leases(study, [a, c], tmp_path / "r")
    d = _lease(tmp_path / "d.tar.xz", {"Q8_0": marker["Q8_0"]}, {}, {}, base="studies/gemma3/smoke/")
    with pytest.raises(LeaseError, match=r"d\.tar\.xz: no results of smollm2/smoke"):
        gather_leases(study, [d], tmp_path / "r")
    e = _lease(tmp_path / "e.tar.xz", {"Q8_0": marker["Q8_0"]}, {"Q8_0": fid["Q8_0"]},
               {("Q8_0", t): table[("Q8_0", t)] for t in ("sciq", "piqa")})
    with pytest.raises(LeaseError, match=r"the reference's bench of sciq, piqa is in none of them"):
        gather_leases(study, [e], tmp_path / "r")
    assert not (tmp_path / "r").exists()  # nothing written by a refused gather


FLOAT = {"device": "cpu", "attention": {"engine": "llama.cpp", "kv_cache": "f32"}}


def test_a_float_reference_replaces_the_leases_reference_and_is_checked_against_it(tmp_path, parts):
    """The float reference's tables give the reference's rows; the lease's own reference (the CUDA one)
    is compared with it: here the float run answers item 4 of SciQ the other way (its `correct` flipped
    by hand) and moves one PIQA margin by 0.25, so leases.json says 1 SciQ item differs (that
    one) and 0 PIQA items, with PIQA's largest margin difference 0.25."""
    samples, fid, marker, table = parts
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    lease = {(m, t): table[(m, t)] for m in ("reference", "Q8_0") for t in ("sciq", "piqa")}
    a = _lease(tmp_path / "a.tar.xz", {"Q8_0": marker["Q8_0"]}, {"Q8_0": fid["Q8_0"]}, lease)
    sciq, piqa = table[("reference", "sciq")].copy(), table[("reference", "piqa")].copy()
    sciq.loc[4, "correct"] = not bool(sciq.loc[4, "correct"])
    piqa.loc[7, "margin"] = piqa.loc[7, "margin"] + 0.25 * (1 if piqa.loc[7, "margin"] > 0 else -1)
    ref = _lease(tmp_path / "ref.tar.xz", {}, {}, {("reference", "sciq"): sciq, ("reference", "piqa"): piqa},
                 provs={("reference", "sciq"): FLOAT, ("reference", "piqa"): FLOAT})
    assert main(["gather-leases", "--study", "smollm2", "--profile", "smoke", "--out", str(tmp_path / "r"),
                 "--reference", str(ref), str(a)]) == 0
    info = json.loads((tmp_path / "r/leases.json").read_text())
    r = info["reference"]
    assert (r["file"], r["device"], r["kv_cache"]) == ("ref.tar.xz", "cpu", ["f32"])
    assert r["vs_leases"]["sciq"]["answers_differ"] == 1
    assert r["vs_leases"]["sciq"]["item_ids"] == [str(sciq.loc[4, "item_id"])]
    assert r["vs_leases"]["piqa"]["answers_differ"] == 0
    assert r["vs_leases"]["piqa"]["margin_abs_diff_max"] == pytest.approx(0.25, abs=1e-9)
    assert info["bench_devices"]["cpu"] == ["reference/sciq", "reference/piqa"]
    got = pd.read_csv(tmp_path / "r/samples.csv", keep_default_na=False, na_values=[""])
    got_ref = got[got["model"] == "reference"].set_index(["task", "item_id"])
    assert bool(got_ref.loc[("sciq", sciq.loc[4, "item_id"]), "correct"]) == bool(sciq.loc[4, "correct"])
    assert got_ref.loc[("piqa", piqa.loc[7, "item_id"]), "margin"] == pytest.approx(piqa.loc[7, "margin"], abs=1e-9)
    want_q8 = table[("Q8_0", "sciq")].set_index("item_id")["margin"]  # the quants' rows are the lease's
    got_q8 = got[(got["model"] == "Q8_0") & (got["task"] == "sciq")].set_index("item_id")["margin"]
    pd.testing.assert_series_equal(got_q8.sort_index(), want_q8.sort_index(), check_dtype=False)


def test_a_reference_that_is_not_float_is_refused(tmp_path, parts):
    samples, fid, marker, table = parts
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    lease = {(m, t): table[(m, t)] for m in ("reference", "Q8_0") for t in ("sciq", "piqa")}
    a = _lease(tmp_path / "a.tar.xz", {"Q8_0": marker["Q8_0"]}, {"Q8_0": fid["Q8_0"]}, lease)
    ref_tables = {("reference", t): table[("reference", t)] for t in ("sciq", "piqa")}
    cuda = {"device": "cuda", "attention": {"engine": "llama.cpp", "kv_cache": "f32"}}
    b = _lease(tmp_path / "b.tar.xz", {}, {}, ref_tables, provs={("reference", "sciq"): FLOAT, ("reference", "piqa"): cuda})
    with pytest.raises(LeaseError, match=r"b\.tar\.xz: samples/reference/piqa\.csv was scored on cuda with KV cache f32, "
                                         r"not a float reference"):
        gather_leases(study, [a], tmp_path / "r", reference=b)
    half = {"device": "cpu", "attention": {"engine": "llama.cpp", "kv_cache": "f16"}}
    c = _lease(tmp_path / "c.tar.xz", {}, {}, ref_tables, provs={("reference", "sciq"): half, ("reference", "piqa"): FLOAT})
    with pytest.raises(LeaseError, match=r"sciq\.csv was scored on cpu with KV cache f16"):
        gather_leases(study, [a], tmp_path / "r", reference=c)
    d = _lease(tmp_path / "d.tar.xz", {}, {}, {**ref_tables, ("Q8_0", "sciq"): table[("Q8_0", "sciq")]},
               provs={k: FLOAT for k in ref_tables})
    with pytest.raises(LeaseError, match=r"d\.tar\.xz: a float reference holds the reference's tables only, not Q8_0"):
        gather_leases(study, [a], tmp_path / "r", reference=d)
    e = _lease(tmp_path / "e.tar.xz", {}, {}, {("reference", "sciq"): table[("reference", "sciq")]},
               provs={("reference", "sciq"): FLOAT})
    with pytest.raises(LeaseError, match=r"e\.tar\.xz: the reference's bench of piqa is not in it"):
        gather_leases(study, [a], tmp_path / "r", reference=e)
    assert not (tmp_path / "r").exists()


def test_the_committed_smollm2_leases_gather_into_one_cohort(tmp_path):
    """The real leases (docs/performance/gpu): every table two leases share is equal (the reference
    on an H100 and an H200 included), the quant files are the same on every lease, and each gathered
    model has every item of the profile's tasks (the power profile's counts: docs/power.md)."""
    tars = sorted(GPU.glob("*-power-smollm2-*results*.tar.xz"))
    assert len(tars) >= 4
    study = load(CONFIGS / "smollm2.yaml", "power")
    (ref,) = GPU.glob("*-smollm2-power-reference-f32.tar.xz")  # what `make power` passes as --reference
    info = gather_leases(study, tars, tmp_path, reference=ref)
    assert len(info["gathered"]) >= 16 and info["failed"] == ["IQ2_XXS-noimat"]
    # the leases' CUDA reference against the float one (the 16-core CPU of lease 5's host) answers as
    # perf/gpu/reference_tf32.py measured it against another CPU (the development machine's): the same
    # items differ, and the margins move by as much (the two CPU builds agree within 1e-4 nats)
    record = json.loads((GPU / "cpu-2026-12-06-reference-tf32-smollm2.json").read_text())["tasks"]
    for task, r in record.items():
        got = info["reference"]["vs_leases"][task]
        assert (got["items"], got["answers_differ"]) == (r["items"], r["answers_differ"]), task
        assert got["margin_abs_diff_max"] == pytest.approx(r["margin_absdiff_max"], abs=1e-4), task
    samples = pd.read_csv(tmp_path / "samples.csv")
    per = samples.groupby(["model", "task"]).size().unstack()
    assert set(per.index) == {"reference", *info["gathered"]}
    for task, n in {"sciq": 800, "arc_easy": 370, "piqa": 1000, "lambada": 1000}.items():
        assert (per[task] == n).all(), task
