"""A GGUF quant job with the reference's check logits on file, against the same job computing them.

job = one fresh process (as the DAG runs a quant job): resolve the study's reference, make one GGUF
quant into an empty artifact root (llama-quantize) and check it (`quantize._check`: open it, score
models.CHECK_TEXT against the float reference's logits). cached = the reference's
check-logits-<key>.npz is there (every job after the first); cold = it is deleted first, so the job
loads the HF reference and runs it, as every quant job did before the file existed. Repetitions
interleaved; ratio = cached / cold (median of neighbouring pairs). Info row, no target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def job(qid: str, root: str) -> dict:
    """The timed work (run in its own process by main)."""
    from silentzone.config import load
    from silentzone.models import resolve
    from silentzone.paths import CONFIGS
    from silentzone.quantize import make_quant
    st = load(CONFIGS / "smollm2.yaml", "default")
    ref = resolve(st.reference.model, st.reference.dtype)
    row = make_quant(st, st.quant(qid), ref, root=root)
    if row["status"] != "ok":
        raise RuntimeError(f"{qid}: {row.get('reason')}")
    return {"check_kld": row["check_kld"], "transformers_imported": "transformers" in sys.modules}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--job":
        print(json.dumps(job(sys.argv[2], sys.argv[3])))
        return
    a = C.args(__doc__, reps=3, quant="Q4_0")
    reps = 1 if a.quick else a.reps
    ref = C.reference()
    got = {}

    def run(cold: bool):
        def f():
            if cold:
                for p in Path(ref.root).glob("check-logits-*.npz"):
                    p.unlink()
            with tempfile.TemporaryDirectory() as d:
                p = subprocess.run([sys.executable, __file__, "--job", a.quant, d], capture_output=True,
                                   text=True, env={**os.environ, "SILENTZONE_THREADS": str(C.THREADS)})
            if p.returncode != 0:
                raise RuntimeError(f"quant job failed: {p.stderr[-2000:]}")
            got["cold" if cold else "cached"] = json.loads(p.stdout.strip().splitlines()[-1])
        return f

    t = C.interleave({"cached": run(False), "cold": run(True)}, reps=reps, warmup=1)
    c, k = got["cached"], got["cold"]
    if c["check_kld"] != k["check_kld"]:
        raise RuntimeError(f"check KLD differs: {c['check_kld']} (file) vs {k['check_kld']} (computed)")
    rows = [C.row(f"GGUF quant job ({a.quant}), check logits on file / computed",
                  C.ratio(t, "cached", "cold"), unit="x",
                  detail=f"{C.med(t['cached']):.1f} s vs {C.med(t['cold']):.1f} s (median of {reps}), "
                  "each a fresh process making and checking the quant; the same check KLD "
                  f"{c['check_kld']:.6f}; transformers imported: {c['transformers_imported']} vs "
                  f"{k['transformers_imported']}")]
    C.write("quant_job", "A quant job with the reference's check logits on file", rows, out_dir=a.out,
            extra={"times": t, "cached": c, "cold": k})


if __name__ == "__main__":
    main()
