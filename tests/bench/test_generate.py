"""Greedy generation with stops, identical on llama.cpp and transformers."""

from __future__ import annotations

from silentzone.bench.generate import greedy


def test_greedy_same_text_on_both_backends_and_stops(gguf_model, hf_model, enc):
    ids = enc("The capital of France is")
    a_ids, a = greedy(gguf_model, ids, enc.decode, 12, (), enc.eos)
    b_ids, b = greedy(hf_model, ids, enc.decode, 12, (), enc.eos)
    assert a == b and a_ids == b_ids and 0 < len(a_ids) <= 12
    assert "Paris" in a
    stop = a.split()[1]  # stop at the second generated word: text is cut before it
    c_ids, c = greedy(gguf_model, ids, enc.decode, 12, (stop,), enc.eos)
    assert stop not in c and a.startswith(c) and enc.decode(c_ids) == c


def test_chat_prompt_stops_at_end_of_turn(gguf_model, enc):
    from silentzone.bench import tasks
    ids = enc.prompt(tasks.get("ifeval"), "Say hello in one word.")
    assert enc.decode(ids).endswith("assistant\n")
    out_ids, text = greedy(gguf_model, ids, enc.decode, 40, (), enc.eos)
    assert text.strip() and len(out_ids) < 40  # ends with <|im_end|>, not the token limit
