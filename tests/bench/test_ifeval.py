"""IFEval checker offline (regex sentence splitter instead of nltk punkt) on hand-made responses."""

from __future__ import annotations

from silentzone.bench import tasks
from silentzone.bench.ifeval import check


def _doc(ids, kwargs):
    return {"key": 0, "prompt": "p", "instruction_id_list": ids, "kwargs": kwargs}


def test_sentence_count_uses_the_offline_splitter():
    d = _doc(["length_constraints:number_sentences"], [{"relation": "less than", "num_sentences": 3}])
    assert check(d, "One sentence here. Another one.")["prompt_strict"]
    assert not check(d, "One. Two. Three. Four.")["prompt_strict"]


def test_real_prompt_comma_lowercase_and_language():
    doc = next(i.content for i in tasks.get("ifeval").items() if i.id == "ifeval-1001")  # no commas
    assert check(doc, "Day one we go to Kyoto and see the temples")["prompt_strict"]
    assert not check(doc, "Day one, we go to Kyoto")["prompt_strict"]
    low = _doc(["change_case:english_lowercase"], [{}])  # lowercase AND detected as English
    assert check(low, "the weather is nice today and we are going to the park")["prompt_strict"]
    assert not check(low, "The weather is nice today and we are going to the park")["prompt_strict"]
    de = _doc(["language:response_language"], [{"language": "de"}])
    assert check(de, "Das Wetter ist heute sehr schön und wir gehen in den Park.")["prompt_strict"]
    assert not check(de, "The weather is nice today and we are going to the park.")["prompt_strict"]


def test_loose_accepts_markdown_stripped_variant():
    d = _doc(["change_case:english_lowercase"], [{}])
    r = check(d, "**Note**\nall lowercase here")
    assert not r["prompt_strict"] and r["prompt_loose"]  # loose drops the first line
