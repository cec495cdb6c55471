"""`analysis` stays light: importing it (and every submodule) never imports torch or the pipeline."""

import json
import subprocess
import sys

import analysis

SUBMODULES = ["contracts", "stats", "cohort", "zone", "decompose", "per_prompt", "uncertainty", "plots"]


def test_import_never_pulls_torch_or_silentzone():
    code = ("import json, sys, analysis\n"
            "light = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib')\n"
            f"for name in {SUBMODULES!r}:\n"
            "    __import__('analysis.' + name)\n"
            "print(json.dumps({'light': light, 'bad': sorted(m for m in sys.modules\n"
            "    if m.split('.')[0] in ('torch', 'silentzone'))}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got == {"light": [], "bad": []}  # plain `import analysis` does not even load matplotlib


def test_public_api_is_exported_and_documented():
    for sub in SUBMODULES:
        assert f"    {sub}" in analysis.__doc__
    for name in analysis.__all__:
        obj = getattr(analysis, name)
        if callable(obj):
            assert obj.__doc__ and len(obj.__doc__) > 40, name


def test_every_function_has_a_docstring():
    import importlib
    import inspect

    missing = []
    for sub in SUBMODULES[1:]:  # contracts predates this package's functions
        mod = importlib.import_module(f"analysis.{sub}")
        for name, obj in vars(mod).items():
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == mod.__name__:
                if not (obj.__doc__ or "").strip():
                    missing.append(f"{sub}.{name}")
                for meth_name, meth in vars(obj).items() if inspect.isclass(obj) else ():
                    if inspect.isfunction(meth) and not meth_name.startswith("__") and not meth.__doc__:
                        missing.append(f"{sub}.{name}.{meth_name}")
    assert missing == []
