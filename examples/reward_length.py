"""An example `--reward module:function`: called as f(prompt, completion, **columns), where columns
are the row's other fields (here `answer`), exactly as TRL passes dataset columns to rewards.

    sftrl run grpo --data examples/addition.jsonl --reward examples.reward_length:exact_and_short
"""


def exact_and_short(prompt: str, completion: str, answer: str, **columns) -> float:
    """1 for the right sum, minus 0.1 per character beyond it."""
    text = completion.strip()
    return float(text == answer) - 0.1 * max(0, len(text) - len(answer))
