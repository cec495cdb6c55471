"""Tool calling: the Berkeley Function Calling Leaderboard (BFCL v4) single-turn AST categories.

    items = load("simple")                 # Items from bfcl_eval/data (the bfcl-eval package)
    text = render(tokenizer, item)         # native tool-call chat format, or BFCL's prompt
    ok = score(item, response)             # the official AST checker's rules (Python)

Data: `bfcl-eval` 2026.3.23 ships BFCL_v4_<category>.json (one JSON object per line: id, question
(turns of chat messages), function (the function docs)) and possible_answer/ (ground truth: per
call, every parameter's list of accepted values; "" in the list marks it optional). Categories
here: simple (simple_python), multiple, parallel, parallel_multiple, irrelevance (no call is right).

Prompt: where the tokenizer's chat template renders `tools` (it changes the text), the functions go
in as OpenAI-style tool schemas (BFCL's type mapping: dict -> object, float -> number, tuple ->
array, any -> string) and the model answers in its own format (<tool_call>{json}</tool_call>,
[TOOL_CALLS][...], a JSON list); otherwise BFCL's default prompting system prompt (the package's
own templates: Python call syntax `[f(a=1), g(b='x')]`, function docs as JSON) goes first.

Checker: the package's ast_checker cannot be imported without its API-client extras (its
model_config imports every handler: anthropic, openai, ...), so `check` here follows it rule by
rule for Python (tests/bench/test_bfcl.py runs the package's own checker beside it, with a stub
for that one import, on the package's possible answers and on perturbed wrong answers). Decoding
follows BFCL's default_decode_ast_prompting, without its `eval` of model text: binary operations
are evaluated only on numeric literals, lambdas are refused (decode failure).
"""

from __future__ import annotations

import ast
import copy
import json
import operator
import re
from functools import lru_cache

from . import data
from .items import Item
from ..errors import SilentzoneError

PACKAGE = "bfcl_eval"
CATEGORIES = {"simple": "simple_python", "multiple": "multiple", "parallel": "parallel",
              "parallel_multiple": "parallel_multiple", "irrelevance": "irrelevance"}

# BFCL's GORILLA_TO_OPENAPI (bfcl_eval/constants/type_mappings.py), the entries Python docs use
OPENAPI = {"integer": "integer", "number": "number", "float": "number", "string": "string",
           "boolean": "boolean", "bool": "boolean", "array": "array", "list": "array",
           "dict": "object", "object": "object", "tuple": "array", "any": "string"}
PY_TYPES = {"string": str, "integer": int, "float": float, "boolean": bool, "array": list,
            "tuple": list, "dict": dict, "any": str}
NESTED = ("array", "tuple")


class DecodeError(SilentzoneError, ValueError):
    """The response holds no decodable function call."""


# ---- data ------------------------------------------------------------------------------------


def data_file(category: str, answers: bool = False):
    name = f"BFCL_v4_{CATEGORIES[category]}.json"
    return data.package_file(PACKAGE, f"data/possible_answer/{name}" if answers else f"data/{name}")


@lru_cache(maxsize=None)
def load(category: str) -> list:
    """Items of one category, in file order; content = the entry and its ground truth."""
    entries = data.jsonl_rows(data_file(category))
    truth = {}
    if category != "irrelevance":
        truth = {r["id"]: r["ground_truth"] for r in data.jsonl_rows(data_file(category, answers=True))}
    out = []
    for e in entries:
        if len(e["question"]) != 1:
            raise data.DataError(f"{data_file(category)}: {e['id']}: not a single-turn entry")
        gt = truth.get(e["id"], [])
        if category != "irrelevance" and e["id"] not in truth:
            raise data.DataError(f"{data_file(category, True)}: no ground truth for {e['id']}")
        content = {"id": e["id"], "question": e["question"], "function": e["function"],
                   "ground_truth": gt}
        out.append(Item(f"bfcl-{e['id']}", content, prompt=e["question"][0][-1]["content"],
                        meta={"category": category}))
    return out


def load_mixed() -> list:
    """All categories interleaved (deterministic), so that 'first n' covers each of them."""
    import numpy as np
    items = [it for c in CATEGORIES for it in load(c)]
    return [items[i] for i in np.random.default_rng(0).permutation(len(items))]


# ---- prompts ---------------------------------------------------------------------------------


def _python_hint(functions: list[dict]) -> list[dict]:
    """BFCL's func_doc_language_specific_pre_processing for Python entries."""
    functions = copy.deepcopy(functions)
    for f in functions:
        f["description"] = f["description"] + " Note that the provided function is in Python 3 syntax."
    return functions


def system_prompt(functions: list[dict]) -> str:
    """BFCL's default prompting system prompt (formulate_system_prompt with
    ret_fmt=python, tool_call_tag=False, func_doc_fmt=json, prompt_fmt=plaintext, style=classic),
    built from the installed package's own templates."""
    import importlib
    d = importlib.import_module(f"{PACKAGE}.constants.default_prompts")
    style = d.PROMPT_STYLE_TEMPLATES["classic"]
    fmt = style["tool_call_no_tag"].format(output_format=d.OUTPUT_FORMAT_MAPPING["python"],
                                          param_types=d.PARAM_TYPE_MAPPING["python"])
    tools = style["available_tools"].format(format="json", functions=json.dumps(functions, indent=4))
    return d.PROMPT_TEMPLATE_MAPPING["plaintext"].format(
        persona=style["persona"], task=style["task"], tool_call_format=fmt,
        multiturn_behavior=style["multiturn_behavior"], available_tools=tools)


def _cast(props: dict) -> dict:
    """BFCL's _cast_to_openai_type (GORILLA_TO_OPENAPI; floats get format and a note)."""
    for v in props.values():
        t = v.get("type")
        if t == "float":
            v["format"] = "float"
            v["description"] = v.get("description", "") + " This is a float type value."
        v["type"] = OPENAPI.get(t, "string") if t is not None else "string"
        if v["type"] in ("array", "object"):
            if "properties" in v:
                v["properties"] = _cast(v["properties"])
            elif "items" in v:
                it = v["items"]
                it["type"] = OPENAPI.get(it.get("type"), "string")
                if it["type"] == "array" and "items" in it:
                    it["items"]["type"] = OPENAPI.get(it["items"].get("type"), "string")
                elif it["type"] == "object" and "properties" in it:
                    it["properties"] = _cast(it["properties"])
    return props


def tools(functions: list[dict]) -> list[dict]:
    """OpenAI-style tool schemas of BFCL function docs (names unchanged)."""
    out = []
    for f in _python_hint(functions):
        f["parameters"]["type"] = "object"
        f["parameters"]["properties"] = _cast(f["parameters"]["properties"])
        out.append({"type": "function", "function": f})
    return out


def _messages(item) -> list[dict]:
    return [dict(m) for m in item.content["question"][0]]


def native(tokenizer) -> bool:
    """Whether the chat template renders tools (a template that ignores them gives the same text)."""
    if not getattr(tokenizer, "chat_template", None):
        return False
    m = [{"role": "user", "content": "What is the weather in Paris?"}]
    t = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city.",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string", "description": "City."}},
                                               "required": ["city"]}}}]
    try:
        with_tools = tokenizer.apply_chat_template(m, tools=t, add_generation_prompt=True, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that rejects tools has no native format
        return False
    return with_tools != tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)


def render(tokenizer, item) -> str:
    """The prompt text of an item: native tool format where the template has one, else BFCL's
    system prompt in front of the question (merged into a system message the entry brings)."""
    msgs = _messages(item)
    if native(tokenizer):
        return tokenizer.apply_chat_template(msgs, tools=tools(item.content["function"]),
                                             add_generation_prompt=True, tokenize=False)
    sp = system_prompt(_python_hint(item.content["function"]))
    if msgs and msgs[0]["role"] == "system":
        msgs[0]["content"] = sp + "\n\n" + msgs[0]["content"]
    else:
        msgs.insert(0, {"role": "system", "content": sp})
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return "\n\n".join(m["content"] for m in msgs) + "\n\n"


# ---- decoding --------------------------------------------------------------------------------

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}


def _arith(node):
    """A BinOp of numeric literals, evaluated without eval (BFCL evals the unparsed text)."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _arith(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _arith(node.left), _arith(node.right)
        if isinstance(node.op, ast.Pow) and (abs(b) > 64 or abs(a) > 1e6):
            raise DecodeError("exponent too large")
        return _BINOPS[type(node.op)](a, b)
    raise DecodeError(f"unsupported expression {ast.unparse(node)[:60]!r}")


def _value(node):
    """BFCL's resolve_ast_by_type."""
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.operand, ast.Constant) and isinstance(node.op, ast.USub):
            return -node.operand.value  # BFCL: -value.operand.value
        raise DecodeError("unsupported unary operation")
    if isinstance(node, ast.List):
        return [_value(v) for v in node.elts]
    if isinstance(node, ast.Dict):
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.BinOp):
        return _arith(node)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return ast.unparse(node) if not node.keywords else _call(node)
    if isinstance(node, ast.Tuple):
        return tuple(_value(v) for v in node.elts)
    if isinstance(node, ast.Subscript):
        return ast.unparse(node.value) + "[" + ast.unparse(node.slice) + "]"
    raise DecodeError(f"unsupported AST type {type(node).__name__}")


def _call(node: ast.Call) -> dict:
    """BFCL's resolve_ast_call: {dotted.name: {keyword: value}} (positional arguments dropped)."""
    parts, f = [], node.func
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return {".".join(reversed(parts)): {kw.arg: _value(kw.value) for kw in node.keywords}}


def decode_python(text: str) -> list:
    """BFCL's default_decode_ast_prompting: `[f(a=1), g(b=2)]` (brackets optional) -> calls."""
    s = text.strip("`\n ")
    if not s.startswith("["):
        s = "[" + s
    if not s.endswith("]"):
        s = s + "]"
    try:
        tree = ast.parse(s.strip().strip("'"), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise DecodeError(f"not Python call syntax: {type(e).__name__}") from None
    body = tree.body
    if isinstance(body, ast.Call):
        return [_call(body)]
    if not isinstance(body, (ast.List, ast.Tuple, ast.Set)):
        raise DecodeError("not a list of calls")
    out = []
    for el in body.elts:
        if not isinstance(el, ast.Call):
            raise DecodeError("a list element is not a call")
        out.append(_call(el))
    return out


def _json_calls(obj) -> list:
    calls = obj if isinstance(obj, list) else [obj]
    out = []
    for c in calls:
        if not isinstance(c, dict):
            raise DecodeError("a JSON tool call is not an object")
        if isinstance(c.get("function"), dict):  # {"type": "function", "function": {...}}
            c = c["function"]
        name = c.get("name", c.get("function"))
        args = c.get("arguments", c.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                raise DecodeError("tool call arguments are not JSON") from None
        if not isinstance(name, str) or not isinstance(args, dict):
            raise DecodeError("a JSON tool call lacks a name or an arguments object")
        out.append({name: args})
    return out


def decode_native(text: str) -> list | None:
    """Native tool calls: <tool_call>{json}</tool_call> blocks, [TOOL_CALLS] [...], or a bare JSON
    object/list of {"name", "arguments"}; None when the text has none of these forms."""
    blocks = re.findall(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", text, re.DOTALL)
    if blocks:
        out = []
        for b in blocks:
            try:
                out += _json_calls(json.loads(b))
            except json.JSONDecodeError:
                raise DecodeError("a <tool_call> block is not JSON") from None
        return out
    s = text.split("[TOOL_CALLS]", 1)[-1].strip().strip("`").strip()
    if s.startswith("json"):
        s = s[4:].strip()
    if not s.startswith(("{", "[{")):
        return None
    try:
        obj = json.loads(s)
    except json.JSONDecodeError:
        return None
    if isinstance(obj, (dict, list)) and _looks_like_call(obj):
        return _json_calls(obj)
    return None


def _looks_like_call(obj) -> bool:
    first = obj[0] if isinstance(obj, list) and obj else obj
    return isinstance(first, dict) and ("name" in first or "function" in first)


def decode(text: str) -> list:
    """Calls [{name: {param: value}}] from a response: native JSON forms first, else BFCL's
    Python call syntax. Raises DecodeError."""
    calls = decode_native(text)
    return calls if calls is not None else decode_python(text)


def is_call_format(decoded) -> bool:
    """BFCL's is_function_calling_format_output."""
    return isinstance(decoded, list) and all(
        isinstance(c, dict) and len(c) == 1 and isinstance(next(iter(c.values())), dict) for c in decoded)


def is_empty(decoded) -> bool:
    """BFCL's is_empty_output: [], [{}] or anything not in call format counts as no call."""
    return not is_call_format(decoded) or len(decoded) == 0 or (len(decoded) == 1 and len(decoded[0]) == 0)


# ---- the AST checker (Python rules of bfcl_eval/eval_checker/ast_eval/ast_checker.py) ---------


def _fail(kind: str) -> dict:
    return {"valid": False, "error_type": kind}


_OK = {"valid": True, "error_type": ""}


def _std(s: str) -> str:
    """standardize_string: drop spaces and ,./-_*^, lower-case, ' -> \"."""
    return re.sub(r"[ \,\.\/\-\_\*\^]", "", s).lower().replace("'", '"')


def _answer_type(options: list):
    return next((type(a) for a in options if a != ""), None)


def _type_check(value, options, expected, nested) -> dict:
    """type_checker: {'valid', 'is_variable'} (one nesting level, as BFCL)."""
    pa_type = _answer_type(options)
    is_var = pa_type is not None and pa_type != expected
    if type(value) == expected:  # noqa: E721 - BFCL compares exact types (bool is not int)
        if nested is None:
            return {"valid": True, "is_variable": is_var}
        for opt in options:
            ok = True
            if type(opt) == list:  # noqa: E721
                for v in value:
                    if not _type_check(v, opt, nested, None)["valid"]:
                        ok = False
                        break
            if ok:
                return {"valid": True, "is_variable": is_var}
        # BFCL falls through to the variable check below
    if pa_type is not None and type(value) == pa_type:  # noqa: E721
        return {"valid": True, "is_variable": True}
    return {"valid": False, "is_variable": False}


def _string_ok(value: str, options: list) -> bool:
    return _std(value) in [_std(o) for o in options if type(o) == str]  # noqa: E721


def _list_ok(value: list, options: list) -> bool:
    v = [_std(x) if type(x) == str else x for x in value]  # noqa: E721
    return v in [[_std(x) if type(x) == str else x for x in o] for o in options]  # noqa: E721


def _dict_ok(value: dict, options: list) -> bool:
    for opt in options:
        if opt == "":
            continue
        ok = True
        for k, v in value.items():
            if k not in opt:
                ok = False
                break
            sv = _std(v) if type(v) == str else v  # noqa: E721
            allowed = [_std(a) if type(a) == str else a for a in opt[k]]  # noqa: E721
            if sv not in allowed:
                ok = False
                break
        if ok:
            for k, v in opt.items():
                if k not in value and "" not in v:
                    ok = False
                    break
        if ok:
            return True
    return False


def _list_dict_ok(value: list, options: list) -> bool:
    for opt in options:
        if len(value) != len(opt):
            continue
        if all(_dict_ok(value[i], [opt[i]]) for i in range(len(value))):
            return True
    return False


def _simple(func: dict, call: dict, answer: dict) -> dict:
    """simple_function_checker for Python."""
    answer = next(iter(answer.values()))
    name = func["name"]
    props = func["parameters"]["properties"]
    if name not in call:
        return _fail("simple_function_checker:wrong_func_name")
    params = call[name]
    for p in func["parameters"].get("required", []):
        if p not in params:
            return _fail("simple_function_checker:missing_required")
    for p, value in params.items():
        if p not in props or p not in answer:
            return _fail("simple_function_checker:unexpected_param")
        desc = props[p]["type"]
        expected = PY_TYPES[desc]
        nested = PY_TYPES[props[p]["items"]["type"]] if desc in NESTED else None
        if desc == "tuple" and type(value) == tuple:  # noqa: E721
            value = list(value)
        if desc == "float" and type(value) == int:  # noqa: E721
            value = float(value)
        tc = _type_check(value, answer[p], expected, nested)
        if not tc["valid"]:
            return _fail("type_error")
        if not tc["is_variable"]:
            if expected == dict:
                if not _dict_ok(value, answer[p]):
                    return _fail("value_error:dict")
                continue
            if expected == list and nested == dict:
                if not _list_dict_ok(value, answer[p]):
                    return _fail("value_error:list_dict")
                continue
            if expected == str:
                if not _string_ok(value, answer[p]):
                    return _fail("value_error:string")
                continue
            if expected == list:
                if not _list_ok(value, answer[p]):
                    return _fail("value_error:list/tuple")
                continue
        if value not in answer[p]:
            return _fail("value_error:others")
    for p in answer:
        if p not in params and "" not in answer[p]:
            return _fail("simple_function_checker:missing_optional")
    return _OK


def _find(functions: list[dict], name: str):
    return next((f for f in functions if f["name"] == name), None)


def check_calls(functions: list[dict], calls: list, answers: list, category: str) -> dict:
    """ast_checker for Python categories: {'valid': bool, 'error_type': str}."""
    if "parallel" in category:
        if len(calls) != len(answers):
            return _fail("parallel_function_checker_no_order:wrong_count")
        matched: list[int] = []
        for ans in answers:
            func = _find(functions, next(iter(ans)))
            res = _fail("parallel_function_checker_no_order:cannot_find_match")
            for i, c in enumerate(calls):
                if i in matched:
                    continue
                res = _simple(func, c, ans)
                if res["valid"]:
                    matched.append(i)
                    break
            if not res["valid"]:
                return _fail("parallel_function_checker_no_order:cannot_find_match")
        return _OK
    if "multiple" in category:
        if len(calls) != len(answers):
            return _fail("multiple_function_checker:wrong_count")
        return _simple(_find(functions, next(iter(answers[0]))), calls[0], answers[0])
    if len(calls) != 1:
        return _fail("simple_function_checker:wrong_count")
    return _simple(functions[0], calls[0], answers[0])


def verdict(item, response: str) -> dict:
    """{'valid', 'error_type', 'n_calls'} of a response, as BFCL's eval runner grades it."""
    cat = item.meta["category"]
    try:
        calls = decode(response)
    except (DecodeError, RecursionError, MemoryError, OverflowError, ZeroDivisionError, TypeError) as e:
        if cat == "irrelevance":
            return {"valid": True, "error_type": "", "n_calls": 0}
        return {"valid": False, "error_type": f"ast_decoder:decoder_failed ({type(e).__name__})",
                "n_calls": 0}
    if cat == "irrelevance":
        empty = is_empty(calls)
        return {"valid": empty, "error_type": "" if empty else "irrelevance_error:decoder_success",
                "n_calls": 0 if empty else len(calls)}
    if not is_call_format(calls):
        return {"valid": False, "error_type": "ast_decoder:decoder_wrong_output_format", "n_calls": 0}
    try:
        res = check_calls(item.content["function"], calls, item.content["ground_truth"],
                          CATEGORIES[cat])
    except (KeyError, TypeError) as e:  # a malformed call against the docs is a wrong answer
        res = _fail(f"checker:{type(e).__name__}")
    return {**res, "n_calls": len(calls)}


def score(item, response: str) -> bool:
    return bool(verdict(item, response)["valid"])


def _first(x):
    """The first accepted value, recursively: a nested dict answer maps each key to its own list
    of accepted values (a key whose first accepted value is "" is left out)."""
    if isinstance(x, dict):
        return {k: _first(v[0]) for k, v in x.items() if v and v[0] != ""}
    if isinstance(x, list) and x and all(isinstance(d, dict) for d in x):
        return [_first(d) for d in x]
    return x


def reference_answer(item) -> str:
    """A Python-syntax answer from the ground truth's first accepted value of every parameter
    (recursively; an optional parameter whose first accepted value is "" left out, unless the
    function doc requires it): one the ground truth calls correct."""
    parts = []
    for call in item.content["ground_truth"]:
        name, params = next(iter(call.items()))
        func = _find(item.content["function"], name) or {"parameters": {}}
        required = set(func["parameters"].get("required", []))
        args = []
        for p, opts in params.items():
            vals = [o for o in opts if o != ""] if p in required else opts[:1]
            if vals and vals[0] != "":
                args.append(f"{p}={_first(vals[0])!r}")
        parts.append(f"{name}({', '.join(args)})")
    return "[" + ", ".join(parts) + "]"
