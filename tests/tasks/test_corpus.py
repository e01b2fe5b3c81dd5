from collections import Counter

from unmask.tasks.corpus import pretrain_text, sft_corpus


def test_sft_corpus_mixes_tasks_deterministically():
    corpus = sft_corpus({"math": 30, "code": 20, "long": 5}, seed=2)
    assert Counter(ex.task for ex in corpus) == {"math": 30, "code": 20, "long": 5}
    assert corpus == sft_corpus({"math": 30, "code": 20, "long": 5}, seed=2)
    assert [ex.task for ex in corpus[:10]] != ["math"] * 10  # shuffled
    test = sft_corpus({"math": 10}, split="test")
    assert not {ex.id for ex in test} & {ex.id for ex in corpus}


def test_pretrain_text_yields_prompts_and_targets():
    texts = list(pretrain_text({"math": 5, "code": 5}))
    assert len(texts) == 20 and all(isinstance(t, str) and t for t in texts)
    assert any("####" in t for t in texts) and any(t.startswith("def ") for t in texts)
