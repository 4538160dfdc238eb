"""The batched sampler against a slow per-row reference, statistically, and for seed determinism."""

from __future__ import annotations

import math
import random

import pytest
import torch

from vivace.engine import sampling_batch
from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.sampler import inverse_cdf, processed_logprobs, sample
from vivace.engine.sampling_batch import SamplingBatch, make_generator

NEG_INF = float("-inf")
EOS = [1, 2]


# ---------------------------------------------------------------- reference, one row at a time


def ref_log_softmax(x: list[float]) -> list[float]:
    m = max(x)
    if m == NEG_INF:
        raise AssertionError("row fully masked")
    z = math.log(sum(math.exp(v - m) for v in x if v != NEG_INF))
    return [v - m - z if v != NEG_INF else NEG_INF for v in x]


def ref_row(
    logits: list[float], p: SamplingParams, prompt: list[int], output: list[int], eos: list[int]
) -> list[float]:
    """Final per-token log-probabilities for one row; greedy rows are one-hot."""
    x = list(logits)
    for t, b in (p.logit_bias or {}).items():
        x[t] += b
    if len(output) < p.min_tokens:
        for t in p.stop_token_ids + ([] if p.ignore_eos else eos):
            x[t] = NEG_INF
    for t in set(prompt + output):
        x[t] = x[t] / p.repetition_penalty if x[t] > 0 else x[t] * p.repetition_penalty
    for t in set(output):
        c = output.count(t)
        x[t] -= p.frequency_penalty * c + p.presence_penalty
    V = len(x)
    if p.temperature == 0:
        best = max(range(V), key=lambda t: (x[t], -t))  # first index among ties
        return [0.0 if t == best else NEG_INF for t in range(V)]
    x = [v / p.temperature for v in x]
    order = sorted(range(V), key=lambda t: -x[t])
    keep = set(order[: p.top_k] if p.top_k > 0 else order)
    if p.top_p < 1.0:
        lp = ref_log_softmax([x[t] if t in keep else NEG_INF for t in range(V)])
        mass, kept = 0.0, set()
        for t in order:
            if t in keep and (mass < p.top_p or not kept):
                kept.add(t)
                mass += math.exp(lp[t])
        keep = kept
    if p.min_p > 0.0:
        lp = ref_log_softmax([x[t] if t in keep else NEG_INF for t in range(V)])
        pmax = max(math.exp(v) for v in lp)
        keep = {t for t in keep if math.exp(lp[t]) >= p.min_p * pmax}
    return ref_log_softmax([x[t] if t in keep else NEG_INF for t in range(V)])


# ---------------------------------------------------------------- random inputs


def random_params(rng: random.Random, V: int) -> SamplingParams:
    def maybe(value, default, chance=0.4):
        return value if rng.random() < chance else default

    return SamplingParams(
        temperature=rng.choice([0.0, 0.0, rng.uniform(0.3, 1.5), 1.0]),
        top_k=maybe(rng.randint(1, V), 0),
        top_p=maybe(rng.uniform(0.05, 1.0), 1.0),
        min_p=maybe(rng.uniform(0.0, 0.5), 0.0),
        repetition_penalty=maybe(rng.uniform(0.5, 2.0), 1.0, 0.3),
        presence_penalty=maybe(rng.uniform(-2, 2), 0.0, 0.3),
        frequency_penalty=maybe(rng.uniform(-2, 2), 0.0, 0.3),
        logit_bias=maybe({rng.randrange(V): rng.uniform(-5, 5) for _ in range(3)}, None, 0.3),
        stop_token_ids=maybe([rng.randrange(V)], [], 0.3),
        min_tokens=maybe(rng.randint(1, 6), 0, 0.3),
        ignore_eos=rng.random() < 0.2,
        logprobs=maybe(rng.randint(0, 5), None, 0.5),
        max_tokens=None,
    )


def random_batch(rng: random.Random, B: int, V: int, force_all: dict | None = None):
    shared = random_params(rng, V)
    params = [shared if rng.random() < 0.2 else random_params(rng, V) for _ in range(B)]
    for p in params:
        for k, v in (force_all or {}).items():
            setattr(p, k, v)
    prompts = [[rng.randrange(V) for _ in range(rng.randint(1, 12))] for _ in range(B)]
    outputs = [[rng.randrange(V) for _ in range(rng.randint(0, 8))] for _ in range(B)]
    logits = torch.randn(B, V, generator=torch.Generator().manual_seed(rng.randrange(2**31))) * 3
    return params, prompts, outputs, logits


def build(params, prompts, outputs, V, generators=None, default_generator=None, speculative_sort=None) -> SamplingBatch:
    return SamplingBatch.build(
        params,
        prompts,
        outputs,
        generators or [None] * len(params),
        V,
        "cpu",
        eos_token_ids=EOS,
        default_generator=default_generator,
        speculative_sort=speculative_sort,
    )


def assert_logprobs_close(got: list[float], want: list[float]) -> None:
    assert [v == NEG_INF for v in got] == [v == NEG_INF for v in want]
    for g, w in zip(got, want, strict=True):
        if w != NEG_INF:
            assert g == pytest.approx(w, abs=2e-4)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("speculative", [True, False])  # False: the GPU's way, no look at the data
@pytest.mark.parametrize("window", [256, 3])  # 3: exercise the top_k/top_p window and its fallback
@pytest.mark.parametrize("seed", range(6))
def test_processed_distribution_matches_reference(seed: int, window: int, speculative: bool, monkeypatch) -> None:
    monkeypatch.setattr(sampling_batch, "_WINDOW", window)
    rng = random.Random(seed)
    V = rng.choice([5, 17, 64, 300])
    for _ in range(15):
        B = rng.randint(1, 9)
        params, prompts, outputs, logits = random_batch(rng, B, V)
        batch = build(params, prompts, outputs, V, speculative_sort=speculative)
        got = processed_logprobs(logits, batch)
        for i in range(B):
            want = ref_row(logits[i].tolist(), params[i], prompts[i], outputs[i], EOS)
            assert_logprobs_close(got[i].tolist(), want)


@pytest.mark.parametrize("seed", range(4))
def test_sample_greedy_rows_logprobs_and_support(seed: int) -> None:
    rng = random.Random(100 + seed)
    V = 33
    for _ in range(15):
        B = rng.randint(1, 9)
        params, prompts, outputs, logits = random_batch(rng, B, V)
        before = logits.clone()
        out = sample(logits, build(params, prompts, outputs, V))
        assert torch.equal(logits, before), "sample must not modify its input"
        asked = any(p.logprobs is not None for p in params)
        assert (out.logprobs is not None) == asked and (out.top_logprobs is not None) == asked
        for i, (p, tok) in enumerate(zip(params, out.token_ids, strict=True)):
            want = ref_row(logits[i].tolist(), p, prompts[i], outputs[i], EOS)
            assert want[tok] != NEG_INF, "drew a token the processing excluded"
            if p.greedy:
                assert want[tok] == 0.0
            if asked:
                raw = ref_log_softmax(logits[i].tolist())
                assert out.logprobs[i] == pytest.approx(raw[tok], abs=1e-5)
                top = sorted(range(V), key=lambda t: -raw[t])[: p.logprobs or 0]
                assert [t for t, _ in out.top_logprobs[i]] == top
                assert [v for _, v in out.top_logprobs[i]] == pytest.approx([raw[t] for t in top], abs=1e-5)


def test_all_greedy_fast_path_is_argmax() -> None:
    logits = torch.randn(7, 50, generator=torch.Generator().manual_seed(0))
    params = [SamplingParams(temperature=0.0)] * 7
    batch = build(params, [[0]] * 7, [[]] * 7, 50)
    assert batch.all_greedy and not batch.any_penalties and not batch.any_bias
    # Nothing to upload: on a GPU every tensor here would be a copy in the step.
    assert batch.greedy_rows is None and batch.sampled_rows is None and batch.temperature is None
    assert not (batch.any_top_k or batch.any_top_p or batch.any_min_p or batch.need_logprobs)
    out = sample(logits, batch)
    assert out.token_ids == logits.argmax(-1).tolist()
    assert out.logprobs is None and out.top_logprobs is None


def test_min_tokens_masks_eos_and_stop_ids_until_reached() -> None:
    V = 8
    logits = torch.zeros(3, V)
    logits[:, 1] = 100.0  # EOS would always win
    logits[:, 5] = 50.0
    p = SamplingParams(temperature=0.0, min_tokens=2, stop_token_ids=[5])
    p_ignore = SamplingParams(temperature=0.0, min_tokens=2, ignore_eos=True)
    batch = build([p, p, p_ignore], [[0], [0], [0]], [[3], [3, 4], [3]], V)
    # Row 0 is short: EOS and stop id masked. Row 1 reached min_tokens. Row 2 ignores EOS anyway.
    assert sample(logits, batch).token_ids == [0, 1, 1]


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.8),
        SamplingParams(temperature=1.3, top_k=4),
        SamplingParams(temperature=1.0, top_p=0.7),
        SamplingParams(temperature=0.9, min_p=0.1),
        SamplingParams(temperature=1.0, top_k=6, top_p=0.9, min_p=0.05, presence_penalty=0.5),
    ],
)
@pytest.mark.parametrize("seeded", [False, True])
def test_empirical_frequencies_match_distribution(params: SamplingParams, seeded: bool) -> None:
    V, N = 8, 4000 if seeded else 40000
    row = torch.tensor([2.0, 1.5, 1.0, 0.7, 0.3, 0.0, -0.5, -1.0])
    logits = row.expand(N, V).contiguous()
    gens = [make_generator(10_000 + i, "cpu") for i in range(N)] if seeded else None
    batch = build([params] * N, [[0]] * N, [[0, 0, 3]] * N, V, gens, torch.Generator().manual_seed(7))
    probs = processed_logprobs(logits, batch)[0].exp()
    counts = torch.bincount(torch.tensor(sample(logits, batch).token_ids), minlength=V).double()
    assert (counts[probs == 0] == 0).all(), "emitted an excluded token"
    freq = counts / N
    tol = 5 * torch.sqrt(probs.double() * (1 - probs.double()) / N) + 1e-9
    assert ((freq - probs.double()).abs() <= tol).all(), (freq, probs)


def step_logits(seed: int, step: int, V: int) -> torch.Tensor:
    return torch.randn(V, generator=torch.Generator().manual_seed(seed * 1000 + step)) * 2


def test_seeded_row_independent_of_batch_composition() -> None:
    V, steps = 40, 12
    target = SamplingParams(temperature=0.9, top_p=0.95, frequency_penalty=0.3, seed=1234)

    def run(others: int, position: int, rng: random.Random) -> list[int]:
        gen = make_generator(target.seed, "cpu")
        other_params = [random_params(rng, V) for _ in range(others)]
        other_gens = [make_generator(rng.randrange(100), "cpu") if rng.random() < 0.5 else None for _ in range(others)]
        outputs: list[list[int]] = [[] for _ in range(others + 1)]
        produced = []
        for step in range(steps):
            params = other_params[:position] + [target] + other_params[position:]
            gens = other_gens[:position] + [gen] + other_gens[position:]
            logits = torch.stack(
                [step_logits(7, step, V) if i == position else torch.randn(V) * 3 for i in range(others + 1)]
            )
            batch = build(params, [[0, 1]] * (others + 1), outputs, V, gens, torch.Generator().manual_seed(step))
            out = sample(logits, batch)
            for i, t in enumerate(out.token_ids):
                outputs[i].append(t)
            produced.append(out.token_ids[position])
        return produced

    alone = run(0, 0, random.Random(0))
    assert len(set(alone)) > 1, "the test row should actually be random"
    for trial in range(4):
        rng = random.Random(trial)
        others = rng.randint(1, 8)
        assert run(others, rng.randint(0, others), rng) == alone


def test_make_generator() -> None:
    assert make_generator(None, "cpu") is None
    a, b = make_generator(5, "cpu"), make_generator(5, "cpu")
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


def test_out_of_vocab_ids_rejected() -> None:
    with pytest.raises(InvalidParameterError, match="logit_bias"):
        build([SamplingParams(logit_bias={99: 1.0})], [[0]], [[]], 10)
    with pytest.raises(InvalidParameterError, match="stop_token_ids"):
        build([SamplingParams(stop_token_ids=[10])], [[0]], [[]], 10)


@pytest.mark.parametrize("top_p", [1e-300, 1e-45, 1e-9])
def test_a_tiny_top_p_keeps_the_top_token(top_p: float) -> None:
    """1e-300 is 0 in float32: the top token must still be kept (it was dropped with the rest)."""
    gen = torch.Generator().manual_seed(3)
    V = 1000
    logits = torch.randn(4, V, generator=gen)
    params = [
        SamplingParams(top_p=top_p),
        SamplingParams(top_p=top_p, top_k=5),
        SamplingParams(top_p=top_p, temperature=0.5),
        SamplingParams(top_p=top_p, min_p=0.1),
    ]
    batch = build(params, [[0]] * 4, [[]] * 4, V)
    got = processed_logprobs(logits, batch)
    best = logits.argmax(dim=-1)
    assert (got > NEG_INF).sum(dim=-1).tolist() == [1, 1, 1, 1]
    assert got.argmax(dim=-1).tolist() == best.tolist()
    assert sample(logits, batch).token_ids == best.tolist()


def test_filter_boundaries() -> None:
    logits = torch.tensor([[0.0, math.log(0.501), math.log(0.499), -20.0]] * 3).log_softmax(-1)
    probs = logits[0].exp()
    p_mass = float(probs[0] + probs[1])
    params = [
        SamplingParams(min_p=0.5),  # keeps p >= 0.5 * p_max
        SamplingParams(top_p=p_mass - 1e-4),  # the top two reach it
        SamplingParams(top_p=p_mass + 1e-4, top_k=3),  # needs the third; top_k drops the fourth
    ]
    got = processed_logprobs(logits, build(params, [[0]] * 3, [[]] * 3, 4))
    assert (got > NEG_INF).tolist() == [
        [True, True, False, False],
        [True, True, False, False],
        [True, True, True, False],
    ]


def test_inverse_cdf_lands_on_positive_weight_at_the_ends_of_u() -> None:
    weights = torch.tensor(
        [[0.0, 0.3, 0.0, 0.7, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0, 0.0, 1.0]]
    )
    below_one = 1.0 - 2.0**-24  # the largest float32 uniform_ can return
    for u, want in ((0.0, [1, 5, 0]), (below_one, [3, 5, 5]), (0.35, [3, 5, 0]), (0.8, [3, 5, 5])):
        got = inverse_cdf(weights.clone(), torch.full((3, 1), u))
        assert got.tolist() == want, (u, got)  # a zero-weight row gets its last index, never one past it


@pytest.mark.parametrize("speculative", [True, False])
def test_top_p_sets_in_the_window_the_wider_window_and_beyond(speculative: bool, monkeypatch) -> None:
    # window 3, wider window 48 of 300 tokens: flat rows whose top_p sets end in each of the three tiers
    monkeypatch.setattr(sampling_batch, "_WINDOW", 3)
    V = 300
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(5)) * 0.5
    logits[0, :2] += 20.0  # a peaked row: its set is two tokens
    params = [SamplingParams(temperature=1.0, top_p=p) for p in (0.9, 0.2, 0.5, 0.6, 0.95, 0.99)]
    sizes = []
    for row, p in zip(logits, params, strict=True):
        cum = row.softmax(-1).sort(descending=True).values.cumsum(-1)
        sizes.append(int((cum < p.top_p).sum()) + 1)
    assert sizes[0] <= 3 and any(3 < n <= 48 for n in sizes) and any(n > 48 for n in sizes), sizes
    batch = build(params, [[0]] * 6, [[]] * 6, V, speculative_sort=speculative)
    got = processed_logprobs(logits, batch)
    for i in range(6):
        assert_logprobs_close(got[i].tolist(), ref_row(logits[i].tolist(), params[i], [0], [], EOS))
