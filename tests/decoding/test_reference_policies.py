"""Fréchet (Fast-dLLM++), EB-Sampler and CreditDecoding decodes, token for token and in NFE, against the plain
restatements of tests/reference_policies.py: every cache mode, ragged (left-padded) batches decoded at once by
unmask and row by row by the reference (Fast-dLLM's loops are batch-size-1 semantics)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from llada_fixtures import left_pad, random_weights, tiny_config, write_checkpoint
from reference_policies import DenseCredit, RefDecode, ref_policy_generate

from unmask.decoding import CreditConfig, DecodeResult, Factor, Frechet, Policy, Threshold, TopK, decode, make_policy
from unmask.decoding.policies.eb import EntropyBounded
from unmask.models import load_model

GEN, BLOCK = 24, 8
PROMPT_LENGTHS = (7, 4, 6)  # ragged: left-padded to 7


@dataclass(frozen=True)
class Case:
    policy: Policy
    rule: str  # the reference's rule
    value: float  # its parameter (topk: forwards in all)
    credit: dict | None = None  # CreditConfig / DenseCredit parameters
    parallel: bool = True  # whether the fixture commits several tokens in some step

    def credit_config(self) -> CreditConfig | None:
        return None if self.credit is None else CreditConfig(**self.credit)


CASES = {
    "frechet-default": Case(Frechet(), "frechet", 0.25, parallel=False),
    "frechet-0": Case(Frechet(0.0), "frechet", 0.0, parallel=False),
    "frechet-neg1": Case(Frechet(-1.0), "frechet", -1.0),
    "frechet-neg2": Case(Frechet(-2.0), "frechet", -2.0),
    "frechet-factor-alias": Case(make_policy("frechet", factor=2.5), "frechet", -1.5),  # delta = 1 - f
    "credit-threshold": Case(Threshold(0.3), "threshold", 0.3, {}),
    "credit-factor": Case(Factor(1.0), "factor", 1.0, {}),
    "credit-frechet": Case(Frechet(-1.0), "frechet", -1.0, {}),
    "credit-frechet-strong": Case(Frechet(0.0), "frechet", 0.0, {"alpha": 2.0, "beta": 0.8, "gamma": 0.5}),
    "credit-topk": Case(TopK(4), "topk", 12, {"alpha": 1.0}),
    "credit-adaptive-threshold": Case(Threshold(0.3), "threshold", 0.3, {"adaptive": True}),
    "credit-adaptive-frechet": Case(Frechet(-2.0), "frechet", -2.0, {"adaptive": True}),
    # entropies here are near log V (a random model): SGLang's default budget commits one token per step
    "eb-default": Case(EntropyBounded(), "eb", 0.15, parallel=False),
    "eb-9": Case(EntropyBounded(9.0), "eb", 9.0),
    "credit-eb": Case(make_policy("eb", gamma=12.0), "eb", 12.0, {"alpha": 1.0}),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny float64 matmuls: one thread (as tests/models/conftest.py), the previous count restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = tiny_config()
    w = random_weights(cfg)
    model = load_model(write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llada", cfg, w), dtype="float64")
    return model, cfg, w


def ragged_prompts(cfg, seed=4):
    """Prompts of PROMPT_LENGTHS tokens, left-padded into one batch: (rows, input_ids, attention_mask)."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(0, 100, (n,), generator=g) for n in PROMPT_LENGTHS]
    return (rows, *left_pad(rows, cfg["pad_token_id"]))


def reference(setup, case: Case, row: torch.Tensor, cache: str, **kw) -> RefDecode:
    model, cfg, w = setup
    credit = None if case.credit is None else DenseCredit(BLOCK, cfg["embedding_size"], **case.credit)
    return ref_policy_generate(w, cfg, row[None], GEN, BLOCK, cfg["mask_token_id"], case.rule, case.value,
                               cache=cache, credit=credit, **kw)


def run(setup, case: Case, ids, attn, cache: str, credit: CreditConfig | None = None, **kw) -> DecodeResult:
    model, cfg, _ = setup
    kw.setdefault("early_stop", False)
    return decode(model, ids, case.policy, mask_id=cfg["mask_token_id"], attention_mask=attn, gen_length=GEN,
                  block_length=BLOCK, cache=cache, credit=credit, **kw)


def assert_equals_reference(out: DecodeResult, refs: list[RefDecode], rows: list[torch.Tensor], P: int) -> None:
    """Each row's tokens and own forwards (``nfe_per_row``) equal its reference's; the batch takes at least as
    many forwards as its slowest row."""
    for b, (row, ref) in enumerate(zip(rows, refs, strict=True)):
        assert torch.equal(out.sequences[b, P - len(row):], ref.x[0]), f"row {b}"
        assert int(out.nfe_per_row[b]) == ref.nfe, f"row {b}"
    assert out.nfe >= max(ref.nfe for ref in refs)


def max_commits_per_step(out: DecodeResult) -> int:
    return max(int((out.commit_step[b] == s).sum()) for b in range(out.commit_step.shape[0])
               for s in range(int(out.commit_step[b].max()) + 1))


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("name", list(CASES))
def test_ragged_batch_equals_reference_row_by_row(setup, name, cache):
    case = CASES[name]
    rows, ids, attn = ragged_prompts(setup[1])
    out = run(setup, case, ids, attn, cache, case.credit_config())
    refs = [reference(setup, case, row, cache) for row in rows]
    assert_equals_reference(out, refs, rows, ids.shape[1])
    if cache == "none":  # the fixture exercises the rule, or the equality proves little
        assert (max_commits_per_step(out) >= 2) == case.parallel
        if case.credit is not None:
            plain = run(setup, case, ids, attn, cache)
            assert not torch.equal(plain.sequences, out.sequences) or not torch.equal(
                plain.nfe_per_row, out.nfe_per_row), "credit changes nothing on this fixture"


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("name", ["frechet-neg2", "credit-threshold", "credit-adaptive-frechet"])
def test_batch_of_one_nfe_equals_reference(setup, name, cache):
    """Unpadded batch of one: ``out.nfe`` itself is the reference's NFE."""
    case = CASES[name]
    row = ragged_prompts(setup[1])[0][0]
    out = run(setup, case, row[None], None, cache, case.credit_config())
    ref = reference(setup, case, row, cache)
    assert torch.equal(out.sequences, ref.x)
    assert out.nfe == ref.nfe


@pytest.mark.parametrize("cache", ["none", "dual"])
@pytest.mark.parametrize("name", ["frechet-neg2", "credit-threshold"])
def test_early_stop_equals_reference(setup, name, cache):
    """A row stops once a stop token is committed with every position before it decoded; the rest is filled
    with stop_ids[0]. Stop tokens frequent on this fixture, so that rows stop at different blocks."""
    case = CASES[name]
    stop_ids = (60, 47)
    rows, ids, attn = ragged_prompts(setup[1])
    out = run(setup, case, ids, attn, cache, case.credit_config(), early_stop=True, stop_ids=stop_ids)
    refs = [reference(setup, case, row, cache, stop_ids=stop_ids) for row in rows]
    assert_equals_reference(out, refs, rows, ids.shape[1])
    full = [reference(setup, case, row, cache) for row in rows]
    assert sum(r.nfe < f.nfe for r, f in zip(refs, full, strict=True)) >= 2, "early stop never happens here"
    assert (out.commit_step == -2).any()


def test_credit_is_reset_at_each_block(setup):
    """A credit carried over from the previous block (positions at the same offset) changes this decode, and
    unmask equals the reference that resets at every block start."""
    case = Case(Threshold(0.3), "threshold", 0.3, {"alpha": 2.0, "beta": 0.9})
    rows, ids, attn = ragged_prompts(setup[1])
    out = run(setup, case, ids, attn, "none", case.credit_config())
    refs = [reference(setup, case, row, "none") for row in rows]
    assert_equals_reference(out, refs, rows, ids.shape[1])
    stale = [reference(setup, case, row, "none", reset_credit=False) for row in rows]
    assert any(not torch.equal(a.x, b.x) or a.nfe != b.nfe for a, b in zip(refs, stale, strict=True))
