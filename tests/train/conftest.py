import pytest

from unmask.tasks.base import Example

MATH = [
    ("What is {a} + {b}? Show your work.", "{a} + {b} = {c}.\n#### {c}"),
    ("Tom has {a} apples and buys {b} more. How many apples does he have?", "He has {a} + {b} = {c} apples.\n#### {c}"),
]
CODE = ("Write a function add_{a}(x) that returns x + {a}.", "def add_{a}(x):\n    return x + {a}\n")


def make_examples(n: int, seed: int = 0) -> list[Example]:
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        if i % 3 == 2:
            p, t = CODE
            task = "code"
        else:
            p, t = MATH[i % 2]
            task = "math"
        out.append(Example(task, f"{task}-{i}", p.format(a=a, b=b), t.format(a=a, b=b, c=a + b), str(a + b)))
    return out


@pytest.fixture(scope="session")
def examples():
    return make_examples(400)


@pytest.fixture(scope="session")
def tokenizer(examples):
    from unmask.models.tokenizer import train_tokenizer

    texts = [t for ex in examples for t in (ex.prompt, ex.target)]
    return train_tokenizer(texts, vocab_size=384)


@pytest.fixture(scope="session")
def tok_dir(tokenizer, tmp_path_factory):
    from unmask.models.tokenizer import save_tokenizer

    return save_tokenizer(tokenizer, tmp_path_factory.mktemp("tok"))
