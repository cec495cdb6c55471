"""Put an earlier lease's finished quant bench results back (perf/gpu/power_run.sh run, issue 19).

    python3 perf/gpu/power_resume.py RESULTS.tar.xz SILENTZONE_HOME

From a results tar of perf/gpu/power_run.py it extracts, under studies/<study>/<profile>/, each
quant's finished task tables (samples/<quant>/<task>.csv and their provenance) and the bench
markers of the quants whose every task is finished (wf/bench/<quant>.json), so that the runner
skips those jobs. And each quant's fidelity (fidelity/<quant>/: its table, provenance, summaries;
wf/fidelity/<quant>.json), so that the score stage skips it; the capture markers (wf/capture/) come
too when every quant that lease made has its fidelity there, so that the capture stage (the
reference's logits, which never travel) is skipped as well: on Gemma 3 the two stages took 175 s of
each lease. It leaves out what a fresh machine must remake: the reference (its samples and
markers: the quants' KLD needs its distributions, which never travel), the quant markers (the quant
files themselves are remade), the partial files (they belong to the other machine's reference
store) and the logs. A file already there is kept. Prints what it put back.

The reuse is sound only where the reference comes out the same: the F32 reference on CUDA gave
bit-identical margins on an H100 and an H200 (docs/performance.md); the bench markers record the
machine each table came from (provenance).
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
from pathlib import Path

SAMPLE = re.compile(r"^studies/[^/]+/[^/]+/samples/(?P<model>[^/]+)/[^/]+\.csv(\.provenance\.json)?$")
MARKER = re.compile(r"^studies/[^/]+/[^/]+/wf/bench/(?P<model>[^/]+)\.json$")
FIDELITY = re.compile(r"^studies/[^/]+/[^/]+/(wf/fidelity/(?P<marker>[^/]+)\.json|fidelity/(?P<model>[^/]+)/.+)$")
MADE = re.compile(r"^studies/[^/]+/[^/]+/wf/quants/(?P<model>[^/]+)\.json$")
CAPTURE = re.compile(r"^studies/[^/]+/[^/]+/wf/capture/[^/]+\.json$")


def _names_tasks(marker: bytes) -> bool:
    """A bench marker of some of a model's tasks (`stage bench --tasks`), not of the whole model."""
    try:
        return "tasks" in json.loads(marker)
    except ValueError:
        return False


def _scored(members) -> set[str]:
    """The quants whose fidelity marker (wf/fidelity/<quant>.json) is among `members`."""
    return {f.group("marker") for f in map(FIDELITY.match, (m.name for m in members)) if f and f.group("marker")}


def members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    keep, files = [], [m for m in tar.getmembers() if m.isfile()]
    made = {MADE.match(m.name).group("model") for m in files if MADE.match(m.name)}
    scored = _scored(files)
    for m in files:
        s, k, f = SAMPLE.match(m.name), MARKER.match(m.name), FIDELITY.match(m.name)
        if f:
            model = f.group("marker") or f.group("model")
            if model in scored:  # a quant's fidelity files come with its marker only
                keep.append(m)
            continue
        if CAPTURE.match(m.name):
            if made and made <= scored:
                keep.append(m)
            continue
        model = (s or k).group("model") if (s or k) else None
        if model is None or model == "reference" or model.startswith("reference-"):
            continue
        keep.append(m)
    return keep


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    src, home = Path(argv[0]), Path(argv[1])
    with tarfile.open(src) as tar:
        keep, got = members(tar), 0
        for m in keep:
            dest = home / m.name
            if dest.exists():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as fh:
                dest.write_bytes(fh.read())
            got += 1
        # a quant's marker, not a (quant, task) one (power_run.py --per-task: it names its tasks)
        quants = sorted(MARKER.match(m.name).group("model") for m in keep
                        if MARKER.match(m.name) and not _names_tasks(tar.extractfile(m).read()))
        scored = _scored(keep)
        capture = sum(1 for m in keep if CAPTURE.match(m.name))
    print(f"power_resume: {got} files from {src.name}; fidelity of {len(scored)} quants, {capture} capture "
          f"markers; finished quants: {' '.join(quants) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
