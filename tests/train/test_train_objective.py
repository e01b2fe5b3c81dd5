import torch

from unmask.models.tokenizer import special_ids, user_prompt_text
from unmask.train.data import encode_sft, length_bucketed_batches, pack_sft_rows, trim_batch
from unmask.train.objective import forward_process, per_row_loss


def test_sft_rows_layout(examples, tokenizer):
    ids = special_ids(tokenizer)
    data = encode_sft(examples[:20], tokenizer, seq_len=128)
    assert len(data) == 20 and data.tasks == [ex.task for ex in examples[:20]]
    for row, ex in enumerate(examples[:20]):
        p = tokenizer.encode(user_prompt_text(ex.prompt), add_special_tokens=False).ids
        r = tokenizer.encode(ex.target, add_special_tokens=False).ids
        plen, n = int(data.prompt_len[row]), int(data.length[row])
        assert plen == len(p) and n == len(p) + len(r) + 1
        x = data.input_ids[row].tolist()
        assert x[:plen] == p and x[plen : n - 1] == r
        assert x[n - 1] == ids["eot"]
        assert all(t == ids["eos"] for t in x[n:])  # padded with end-of-text
        assert x[0] == ids["bos"]


def test_long_rows_dropped():
    data, kept = pack_sft_rows([[1, 2], [1, 2, 3]], [[4] * 3, [4] * 10], seq_len=8, eot_id=9, eos_id=0)
    assert kept == [0] and data.input_ids.tolist() == [[1, 2, 4, 4, 4, 9, 0, 0]]


def test_prompt_never_masked_padding_is_target():
    torch.manual_seed(0)
    B, L, mask_id = 256, 40, 99
    x = torch.randint(0, 50, (B, L))
    x[:, 30:] = 7  # end-of-text padding
    plen = torch.randint(1, 20, (B,))
    noisy, masked, p = forward_process(x, plen, mask_id)
    pos = torch.arange(L)[None, :]
    assert not masked[pos < plen[:, None]].any()  # the prompt is never masked
    assert torch.equal(noisy[~masked], x[~masked]) and (noisy[masked] == mask_id).all()
    assert masked[:, 30:].any()  # padding end-of-text tokens are masked like response tokens
    assert ((p >= 1e-3) & (p <= 1)).all()
    # per-row masking ratio of the answer tracks p
    ratio = masked.sum(1) / (L - plen)
    assert torch.corrcoef(torch.stack([ratio, p]))[0, 1] > 0.9


def test_loss_matches_plain_restatement():
    torch.manual_seed(1)
    B, L, V = 3, 12, 17
    x = torch.randint(0, V, (B, L))
    plen = torch.tensor([2, 5, 0])
    masked = torch.rand(B, L) < 0.5
    masked &= torch.arange(L)[None] >= plen[:, None]
    p = torch.tensor([0.3, 0.9, 0.05])
    logits = torch.randn(B, L, V)
    got = per_row_loss(logits, x, masked, p, plen)
    expected = torch.zeros(B)
    for b in range(B):
        total = 0.0
        for i in range(L):
            if masked[b, i]:
                logp = torch.log_softmax(logits[b, i], -1)[x[b, i]]
                total += -float(logp) / float(p[b])
        expected[b] = total / (L - int(plen[b]))  # answer length includes the padding
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # batch loss = mean over rows: LLaDA's sum(token_loss / answer_len[masked]) / B
    rows = torch.arange(B)[:, None].expand(B, L)
    token_loss = torch.nn.functional.cross_entropy(logits[masked], x[masked], reduction="none") / p[rows[masked]]
    ans_len = (L - plen)[:, None].expand(B, L)[masked]
    torch.testing.assert_close(got.mean(), (token_loss / ans_len).sum() / B)


def test_batching_helpers():
    lengths = torch.tensor([5, 50, 7, 60, 6, 55, 8, 65])
    batches = length_bucketed_batches(lengths, 2, torch.Generator().manual_seed(0), bucket_factor=4)
    assert len(batches) == 4 and sorted(torch.cat(batches).tolist()) == list(range(8))
    for b in batches:  # similar lengths together
        assert (lengths[b] > 20).all() or (lengths[b] < 20).all()
    ids = torch.zeros(2, 256, dtype=torch.long)
    assert trim_batch(ids, torch.tensor([10, 70]), 64).shape == (2, 128)
    assert trim_batch(ids, torch.tensor([10, 64]), 64).shape == (2, 128)  # keeps one end-of-text
    assert trim_batch(ids, torch.tensor([10, 250]), 64).shape == (2, 256)
    assert trim_batch(ids, torch.tensor([10, 70]), 64, extra=100).shape == (2, 192)  # 71 + 100 -> 192
    assert trim_batch(ids, torch.tensor([10, 250]), 64, extra=500).shape == (2, ids.shape[1])  # capped


def test_semi_ar_rows_look_like_a_block_decoding_canvas():
    """Each semi-AR row: clean answer prefix, one noised window of W positions, everything after masked."""
    torch.manual_seed(2)
    B, L, W, mask_id = 512, 96, 8, 99
    x = torch.randint(0, 50, (B, L))
    plen = torch.randint(1, 40, (B,))
    _, uniform_masked, _ = forward_process(x, plen, mask_id, semi_ar_prob=0.0)
    _, masked, p = forward_process(x, plen, mask_id, semi_ar_prob=1.0, semi_ar_block=W)
    pos = torch.arange(L)
    for b in range(B):
        m = masked[b]
        assert not m[: plen[b]].any()
        if not m.any():  # nothing masked is possible only with the cut inside the last W positions
            assert L - plen[b] <= W or p[b] < 0.05
            continue
        first = int(pos[m][0])
        assert m[first + W :].all()  # after the current block: all masked
        # the share of the answer masked is p (the expected share) up to the window's randomness
        assert abs(m.sum().item() - p[b].item() * (L - plen[b]).item()) <= W + 1e-4
    # semi-AR rows are suffix-heavy: later answer positions are masked more often than under uniform noise
    late = pos[None, :] >= L - 8
    assert masked[late.expand(B, L)].float().mean() > uniform_masked[late.expand(B, L)].float().mean() + 0.2


def test_semi_ar_share_and_weights():
    torch.manual_seed(3)
    B, L = 4000, 64
    x = torch.randint(0, 50, (B, L))
    plen = torch.full((B,), 16)
    _, uniform, _ = forward_process(x, plen, 99)
    _, masked, p = forward_process(x, plen, 99, semi_ar_prob=0.25, semi_ar_block=8)
    answer = L - 16
    # the last 24 of the 48 answer positions are all masked with probability E[t^24] = 1/25 under uniform
    # noise and at least P(cut + 8 <= 24) = 17/48 in a semi-AR row: >= 0.75/25 + 0.25 * 17/48 = 0.119
    assert uniform[:, -24:].all(1).float().mean() < 0.06
    assert 0.11 < masked[:, -24:].all(1).float().mean() < 0.16
    assert ((p > 0) & (p <= 1)).all()
    # p is the expected masked share: on average it matches the realised one
    assert abs((masked.sum(1) / answer).mean() - p.mean()) < 0.01
