"""Is the reference on the GPU float? Its bench tables from a GPU lease (llama.cpp's CUDA build, F32
weights and KV cache) against the same reference scored on this CPU (llama.cpp's CPU build), and both
against transformers in float32 on --items items of one task (issue 19, item 0).

    .venv/bin/python perf/gpu/reference_tf32.py --lease docs/performance/gpu/<lease>-results.tar.xz \
        --study smollm2 --profile power [--task piqa] [--items 60] [--out FILE.json]

The CPU tables are the ones `perf/gpu/power_run.py --device cpu` leaves under $SILENTZONE_HOME
(studies/<study>/<profile>/samples/reference/). Prints, per task, the answers that differ and the
margins' and gold log-likelihoods' differences; then each engine's margins against transformers
float32 (scored here, one thread). llama.cpp's CUDA build does F32 matrix products in TF32.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lease", type=Path, required=True)
    ap.add_argument("--study", default="smollm2")
    ap.add_argument("--profile", default="power")
    ap.add_argument("--task", default="piqa", help="the task whose first --items items transformers scores")
    ap.add_argument("--items", type=int, default=60)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    import pandas as pd
    from silentzone.bench.run import read_samples, run_benchmarks
    from silentzone.config import load_study
    from silentzone.models import resolve
    from silentzone.workflow.stages import sd as study_root
    study = load_study(a.study, a.profile)
    base = f"studies/{a.study}/{a.profile}/samples/reference/"
    gpu = {}
    with tarfile.open(a.lease) as tar:
        for t in study.tasks:
            data = tar.extractfile(base + f"{t}.csv").read()
            gpu[t] = pd.read_csv(io.BytesIO(data))
    cpu_dir = study_root(study) / "samples" / "reference"
    out = {"lease": a.lease.name, "tasks": {}}
    for t in study.tasks:
        g, c = gpu[t], read_samples(cpu_dir / f"{t}.csv")
        m = g.merge(c, on="item_id", suffixes=("_gpu", "_cpu"))
        if len(m) != len(g) or len(m) != len(c):
            sys.exit(f"reference_tf32.py: {t}: the GPU and CPU tables hold other items ({len(g)}, {len(c)}, {len(m)} common)")
        dm, dl = (m.margin_gpu - m.margin_cpu).abs(), (m.ll_gold_gpu - m.ll_gold_cpu).abs()
        flips = m[m.correct_gpu != m.correct_cpu]
        out["tasks"][t] = {"items": len(m), "correct_gpu": int(m.correct_gpu.sum()), "correct_cpu": int(m.correct_cpu.sum()),
                           "answers_differ": len(flips), "abs_margin_at_differ": [round(abs(x), 4) for x in flips.margin_cpu],
                           "margin_absdiff_median": float(dm.median()), "margin_absdiff_max": float(dm.max()),
                           "ll_gold_absdiff_median": float(dl.median()), "ll_gold_absdiff_max": float(dl.max())}
        print(f"{t}: {len(m)} items; correct GPU {out['tasks'][t]['correct_gpu']}, CPU {out['tasks'][t]['correct_cpu']}; "
              f"answers differ on {len(flips)}; margin |diff| median {dm.median():.2e} max {dm.max():.2e}", flush=True)
    ref = resolve(study.reference.model, study.reference.dtype)
    t0 = time.time()
    f = run_benchmarks(study, {"reference": str(ref.hf_dir)}, tasks=[a.task], n_items=a.items,
                       out_dir=Path("/tmp") / f"reference_tf32-{a.study}", progress=False, threads=1)
    m = f.merge(gpu[a.task], on="item_id", suffixes=("", "_gpu")).merge(
        read_samples(cpu_dir / f"{a.task}.csv"), on="item_id", suffixes=("", "_cpu"))
    out["vs_transformers_fp32"] = {"task": a.task, "items": len(m), "seconds": round(time.time() - t0, 1)}
    for name, col in (("llama.cpp CUDA", "margin_gpu"), ("llama.cpp CPU", "margin_cpu")):
        d = (m["margin"] - m[col]).abs()
        out["vs_transformers_fp32"][name] = {"margin_absdiff_median": float(d.median()), "margin_absdiff_max": float(d.max())}
        print(f"{name} vs transformers float32 ({a.task}, {len(m)} items): margin |diff| median {d.median():.2e} "
              f"max {d.max():.2e}", flush=True)
    if a.out:
        a.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
