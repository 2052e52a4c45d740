"""The addition task: formats, splits, and every supervision signal it yields."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import random

from reference_impls.tasks.addition import Addition, Problem, reward, wrong_answer


def test_prompt_answer_and_reward():
    p = Problem(12, 34)
    assert (p.prompt, p.answer) == ("12+34=", "46")
    assert reward(p, "46") == 1.0 and reward(p, "47") == 0.0 and reward(p, "") == 0.0


def test_splits_digits_and_held_out():
    t = Addition()
    idd, ood = t.eval_sets["in_distribution"], t.eval_sets["out_of_distribution"]
    assert len(idd) == len(ood) == 200
    assert all(10 <= p.a <= 99 and 10 <= p.b <= 99 for p in idd)
    assert all(100 <= p.a <= 999 and 100 <= p.b <= 999 for p in ood)
    train = t.problems(2000, random.Random(0))
    assert not set(train) & set(idd)
    assert t.problems(5, random.Random(3)) == t.problems(5, random.Random(3))  # seeded


def test_signals():
    t, rng = Addition(), random.Random(0)
    for prompt, completion in t.demonstrations(20, rng):
        a, b = map(int, prompt[:-1].split("+"))
        assert int(completion) == a + b
    for prompt, chosen, rejected in t.preference_pairs(50, rng):
        a, b = map(int, prompt[:-1].split("+"))
        assert int(chosen) == a + b != int(rejected) and int(rejected) >= 0
    labels = t.unpaired(200, rng)
    assert 60 < sum(lab for *_, lab in labels) < 140
    for prompt, completion, good in labels:
        a, b = map(int, prompt[:-1].split("+"))
        assert (int(completion) == a + b) == good
    assert all(wrong_answer(Problem(10, 0), random.Random(s)) != "10" for s in range(50))
