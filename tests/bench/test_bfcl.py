"""BFCL tool calling: loader, decoder, and our AST checker against the package's own checker on the
package's own possible answers (known-correct) and on perturbations of them (known-wrong)."""

from __future__ import annotations

import collections
import copy
import importlib
import json
import sys
import types

import pytest

from silentzone.bench import bfcl
from silentzone.bench import tasks as T

PY_CATS = ("simple", "multiple", "parallel", "parallel_multiple")


@pytest.fixture(scope="module")
def official():
    """The package's own ast_checker. Its module imports model_config, which imports every API
    handler (anthropic, openai, ...); that one module is stubbed (a name without '.' handling
    needed: underscore_to_dot False, as for prompting models) and removed again afterwards."""
    stub = types.ModuleType("bfcl_eval.constants.model_config")
    stub.MODEL_CONFIG_MAPPING = collections.defaultdict(lambda: types.SimpleNamespace(underscore_to_dot=False))
    name = "bfcl_eval.eval_checker.ast_eval.ast_checker"
    saved = {k: sys.modules.get(k) for k in (stub.__name__, name)}
    sys.modules[stub.__name__] = stub
    try:
        mod = importlib.import_module(name)
        from bfcl_eval.constants.enums import Language
        yield lambda f, c, a, cat: bool(mod.ast_checker(f, c, a, Language.PYTHON, cat, "stub")["valid"])
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _perturb(calls: list, functions: list) -> list[list]:
    """Known-wrong variants of a correct call list."""
    out = []
    name, params = next(iter(calls[0].items()))
    out.append([{name + "_x": params}] + calls[1:])                       # wrong function name
    out.append([{name: {**params, "zz_extra": 1}}] + calls[1:])            # unexpected parameter
    for p, v in params.items():                                            # wrong value, each type
        if isinstance(v, bool):
            w = not v
        elif isinstance(v, int):
            w = v + 7
        elif isinstance(v, float):
            w = v * 2 + 1.5
        elif isinstance(v, str):
            w = v + " zz"
        elif isinstance(v, list):
            w = v + [v[0]] if v else ["zz"]
        elif isinstance(v, dict):
            w = {**v, "zz_key": 1}
        else:
            continue
        out.append([{name: {**params, p: w}}] + calls[1:])
        out.append([{name: {**params, p: str(v) if not isinstance(v, str) else 3}}] + calls[1:])  # wrong type
        break
    func = bfcl._find(functions, name)
    req = [p for p in func["parameters"].get("required", []) if p in params] if func else []
    if req:
        out.append([{name: {k: v for k, v in params.items() if k != req[0]}}] + calls[1:])  # missing
    out.append(calls + [copy.deepcopy(calls[0])])                         # one call too many
    if len(calls) > 1:
        out.append(calls[:-1])                                            # one call too few
        out.append(list(reversed(calls)))                                 # order: still right
    return out


def test_loader_counts_and_hashes():
    n = {c: len(bfcl.load(c)) for c in bfcl.CATEGORIES}
    assert n == {"simple": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200,
                 "irrelevance": 240}
    items = T.get("bfcl").items()
    assert len(items) == 1240 and len({it.id for it in items}) == 1240
    assert {it.meta["category"] for it in items[:40]} == set(bfcl.CATEGORIES)  # interleaved
    assert T.get("bfcl").chance == pytest.approx(240 / 1240) and T.get("bfcl_irrelevance").chance == 1.0
    it = T.get("bfcl_simple").items(1)[0]
    assert it.id == "bfcl-simple_python_0" and it.content["ground_truth"][0]["calculate_triangle_area"]
    assert T.item_hash(it) == T.item_hash(bfcl.load("simple")[0])


def test_checker_agrees_with_the_package_checker(official, capsys):
    """Every item of the four AST categories: our verdict equals the package's verdict on the
    answer built from its possible answers and on ~5 known-wrong perturbations of it."""
    n = agree_correct = n_wrong = 0
    for cat in PY_CATS:
        for it in bfcl.load(cat):
            funcs, truth = it.content["function"], it.content["ground_truth"]
            right = bfcl.decode(bfcl.reference_answer(it))
            cases = [(right, None)] + [(c, False) for c in _perturb(right, funcs)]
            for calls, _ in cases:
                cat_id = bfcl.CATEGORIES[cat]
                ours = bfcl.check_calls(funcs, copy.deepcopy(calls), truth, cat_id)["valid"]
                theirs = official(copy.deepcopy(funcs), copy.deepcopy(calls), copy.deepcopy(truth), cat_id)
                assert ours == theirs, (it.id, calls)
                n += 1
            agree_correct += official(funcs, right, truth, bfcl.CATEGORIES[cat])
            n_wrong += len(cases) - 1
    with capsys.disabled():
        print(f"\nBFCL checker: {n} verdicts equal to the package's ({sum(len(bfcl.load(c)) for c in PY_CATS)} "
              f"items; {agree_correct} ground-truth answers accepted by both; {n_wrong} perturbations)")
    assert n > 4000 and agree_correct >= 995  # the package's own answers are (nearly all) valid


def test_worked_verdicts_on_simple_python_0():
    # ground truth: calculate_triangle_area(base=[10], height=[5], unit=["units", ""])
    it = bfcl.load("simple")[0]
    ok = lambda r: bfcl.score(it, r)  # noqa: E731
    assert ok("[calculate_triangle_area(base=10, height=5)]")           # unit optional
    assert ok("calculate_triangle_area(base=10, height=5, unit='Units')")  # case, no brackets
    assert ok('<tool_call>\n{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}\n</tool_call>')
    assert ok('[{"name": "calculate_triangle_area", "arguments": "{\\"base\\": 10, \\"height\\": 5}"}]')
    assert not ok("[calculate_triangle_area(base=10, height=6)]")        # wrong value
    assert not ok("[calculate_triangle_area(base=10.0, height=5)]")      # float for integer
    assert not ok("[calculate_triangle_area(base=10)]")                  # missing required
    assert not ok("The area is 25 square units.")                         # no call
    assert not ok("[calculate_triangle_area(base=10, height=5), calculate_triangle_area(base=1, height=1)]")
    assert ok("[calculate_triangle_area(base=5 + 5, height=5)]")         # BFCL evaluates arithmetic
    assert not ok("[calculate_triangle_area(base=(lambda: 10)(), height=5)]")


def test_irrelevance_rule():
    # right when the response holds no call: prose, [], or undecodable text; wrong with any call
    it = bfcl.load("irrelevance")[0]
    name = it.content["function"][0]["name"]
    assert bfcl.score(it, "None of the functions can compute the area of a triangle.")
    assert bfcl.score(it, "[]")
    assert not bfcl.score(it, f"[{name}(weight=70, height=1.75)]")
    assert not bfcl.score(it, f'<tool_call>{{"name": "{name}", "arguments": {{"weight": 70}}}}</tool_call>')


def test_decoder_never_evaluates_model_text(tmp_path):
    marker = tmp_path / "pwned"
    it = bfcl.load("simple")[0]
    evil = f"[calculate_triangle_area(base=__import__('os').system('touch {marker}'), height=5)]"
    assert not bfcl.score(it, evil)
    evil2 = f"[calculate_triangle_area(base=(lambda: __import__('os').system('touch {marker}'))(), height=5)]"
    assert not bfcl.score(it, evil2)
    assert not bfcl.score(it, "[f(x=9**9**9)]")  # refused, not computed
    assert not marker.exists()


def test_prompt_fallback_and_native_format(smollm2_ref):
    # SmolLM2's template ignores tools: BFCL's prompting system prompt goes in the system turn
    tok = smollm2_ref.tokenizer()
    assert not bfcl.native(tok)
    it = bfcl.load("simple")[0]
    text = bfcl.render(tok, it)
    assert "[func_name1(params_name1=params_value1" in text and "calculate_triangle_area" in text
    assert "Note that the provided function is in Python 3 syntax." in text
    assert text.endswith("<|im_start|>assistant\n")

    class ToolTok:  # a template that renders tools: the native path, tool schemas in OpenAPI types
        chat_template = "x"

        def apply_chat_template(self, msgs, tools=None, add_generation_prompt=True, tokenize=False):
            return json.dumps({"m": msgs, "t": tools})
    out = json.loads(bfcl.render(ToolTok(), bfcl.load("parallel_multiple")[1]))
    assert out["m"][0]["role"] == "user" and len(out["m"]) == 1       # no BFCL system prompt
    params = out["t"][0]["function"]["parameters"]
    assert params["type"] == "object" and {p["type"] for p in params["properties"].values()} <= {
        "integer", "number", "string", "boolean", "array", "object"}


@pytest.mark.slow
def test_real_smollm2_bfcl_rows(smollm2_ref, enc, tmp_path, capsys):
    """The bfcl task on the real SmolLM2 through run_benchmarks (reference only, 5 items): rows
    well formed, and each row's verdict equals the checker's verdict on the stored response."""
    import math
    from silentzone.bench.run import run_benchmarks
    from silentzone.config import load
    from silentzone.paths import CONFIGS
    study = load(CONFIGS / "smollm2.yaml", "smoke")
    df = run_benchmarks(study, {"reference": smollm2_ref.gguf}, tasks=["bfcl"], n_items=5, k=64,
                        threads=2, tokenizer=enc.tok, out_dir=tmp_path, progress=False)
    assert len(df) == 5 and df.item_id.str.startswith("bfcl-").all()
    assert df.margin.map(math.isnan).all() and (df.n_tokens > 0).all() and (df.kld_mean == 0).all()
    items = {it.id: it for it in T.get("bfcl").items(5)}
    for _, r in df.iterrows():
        assert bool(r.correct) == bfcl.score(items[r.item_id], r.response)
    with capsys.disabled():
        for _, r in df.iterrows():
            print(f"\n{r.item_id}: correct={r.correct} response={r.response[:120]!r}")
