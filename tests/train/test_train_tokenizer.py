import json

from unmask.models.tokenizer import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    Tokenizer,
    padded_embedding_size,
    render_chat,
    special_ids,
    user_prompt_text,
)

LLADA_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def test_template_is_llada_instruct_shape():
    assert CHAT_TEMPLATE == LLADA_TEMPLATE


def test_round_trip_and_atomic_specials(tokenizer):
    text = "Tom has 12 apples.\n  def f(x):\n\treturn x * 3 + 45  # ünïcode ✓"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    ids_special = special_ids(tokenizer)
    for tok in SPECIAL_TOKENS:
        enc = tokenizer.encode(f"a{tok}b", add_special_tokens=False).ids
        assert tokenizer.token_to_id(tok) in enc, tok
        assert len([i for i in enc if i == tokenizer.token_to_id(tok)]) == 1
    assert ids_special["pad"] == ids_special["eos"]
    assert len(set(ids_special.values())) == 6


def test_digits_are_single_tokens(tokenizer):
    enc = tokenizer.encode("12345 + 678 = 13023", add_special_tokens=False)
    digit_tokens = [t for t in enc.tokens if any(c.isdigit() for c in t)]
    assert digit_tokens and all(len(t) == 1 for t in digit_tokens)


def test_vocab_size_padding():
    assert padded_embedding_size(3072) == 3072
    assert padded_embedding_size(3000) == 3008
    assert padded_embedding_size(1) == 64


def test_saved_folder_loads_and_chat_template_matches(tok_dir, tokenizer):
    cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert cfg["bos_token"] == "<|startoftext|>"
    assert cfg["eos_token"] == cfg["pad_token"] == "<|endoftext|>"
    tok = Tokenizer.from_pretrained(tok_dir)
    messages = [{"role": "user", "content": "  What is 2 + 3?\n"}]
    expected = (
        "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert tok.apply_chat_template(messages, add_generation_prompt=True) == expected
    assert render_chat(messages) == expected
    assert user_prompt_text(messages[0]["content"]) == expected
    two = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tok.apply_chat_template(two, add_generation_prompt=False) == (
        "<|startoftext|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    )
    assert tok.mask_id == tokenizer.token_to_id("<|mdm_mask|>")
    assert tok.eos_id == tok.pad_id == tokenizer.token_to_id("<|endoftext|>")
    assert tok.eot_id == tokenizer.token_to_id("<|eot_id|>")
    ids = tok.encode(expected)
    assert ids[0] == tokenizer.token_to_id("<|startoftext|>")
    assert tok.decode(ids, skip_special_tokens=False) == expected
