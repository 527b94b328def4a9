"""The sampler's features equal a plain forward pass, whatever the finish."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers.cache_utils import DynamicLayer

from central.decoding import GrowingLayer, onednn_linears
from central.forward import empty_response_tokens
from central.prompting import render_prompt
from central.sampler import Cancelled, SampledCandidate, SamplingConfig, _draw, sample
from language_ranker.v1 import ranker_pb2 as pb

LAYER = 2


def _run(model, prompt: str, **config) -> tuple[list[int], np.ndarray, list[SampledCandidate]]:
    ids = render_prompt(model, pb.Prompt(text=prompt))
    events = list(sample(model, ids, SamplingConfig(**config), LAYER))
    return ids, events[0], events[1:]


def _forward(model, ids: list[int]):
    with torch.inference_mode():
        return model.model(torch.tensor([ids]), output_hidden_states=True)


def _fed(model, candidate: SampledCandidate) -> list[int]:
    """What the model was fed for a response: its tokens, or EOS once for an empty one."""
    return candidate.token_ids or empty_response_tokens(model)


def test_features_equal_a_direct_forward_pass_for_eos_and_length_finishes(tiny_model) -> None:
    ids, instruction, candidates = _run(
        tiny_model, "What is two plus three?", k=12, max_new_tokens=10, seed=3
    )
    assert sorted(c.index for c in candidates) == list(range(12))
    finishes = {c.finished_by_eos for c in candidates}
    assert finishes == {True, False}, "the tiny model should end some responses early"

    direct = _forward(tiny_model, ids)
    np.testing.assert_allclose(instruction, direct.hidden_states[LAYER][0, -1], atol=1e-5)
    for candidate in candidates:
        out = _forward(tiny_model, ids + _fed(tiny_model, candidate))
        expected = out.hidden_states[LAYER][0, -1].numpy()
        np.testing.assert_allclose(candidate.feature, expected, rtol=1e-4, atol=1e-5)
        if not candidate.finished_by_eos:
            assert len(candidate.token_ids) == 10


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("ends", ["model", "often"])
def test_in_pass_mean_and_entropy_equal_a_plain_forward_pass(tiny_model, ends: str) -> None:
    """The running sums over the decode steps give a plain pass's mean over the response,
    at the feature layer and at hidden state 0 (the embedding mean).

    "often" counts a third of the vocabulary as end tokens, so some responses
    end at once (EOS first) and others after a few tokens, in one batch.
    """
    model = tiny_model
    if ends == "often":
        model = dataclasses.replace(tiny_model, eos_token_ids=frozenset(range(2, 140)))
    ids = render_prompt(model, pb.Prompt(text="What is two plus three?"))
    config = SamplingConfig(k=12, max_new_tokens=6, seed=3)
    events = list(sample(model, ids, config, LAYER, entropy=True, embedding_mean=True))
    candidates = events[1:]
    lengths = {len(c.token_ids) for c in candidates}
    assert len(lengths) > 1 and (ends == "model" or 0 in lengths)
    assert ends == "often" or 6 in lengths  # rows cut at max_new_tokens: the collect-only pass
    for c in candidates:
        fed = _fed(model, c)
        out = _forward(model, ids + fed)
        states = out.hidden_states[LAYER][0, len(ids) :]
        np.testing.assert_allclose(c.mean_feature, states.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(c.feature, states[-1], rtol=1e-4, atol=1e-5)
        embedded = out.hidden_states[0][0, len(ids) :].mean(0)
        np.testing.assert_allclose(c.embedding_mean_feature, embedded, rtol=1e-5, atol=1e-6)
        drawn_from = out.logits[0, len(ids) - 1 : len(ids) - 1 + len(fed)]
        assert c.mean_entropy == pytest.approx(float(_entropy(drawn_from).mean()), abs=1e-4)


def test_a_response_that_ends_at_once_is_the_eos_state_not_the_prompts(tiny_model) -> None:
    """Every row picks an end token first (greedy), so every candidate is empty."""
    top = 2  # the tiny model's most likely first token after this prompt is its EOS
    ids = render_prompt(tiny_model, pb.Prompt(text="Write a poem."))
    with torch.inference_mode():
        first = tiny_model.model(torch.tensor([ids])).logits[0, -1]
    assert int(first.argmax()) == top == tiny_model.tokenizer.eos_token_id
    config = SamplingConfig(k=3, max_new_tokens=5, temperature=0.0)
    events = list(sample(tiny_model, ids, config, LAYER, entropy=True))
    instruction, candidates = events[0], events[1:]
    eos_state = _forward(tiny_model, [*ids, top]).hidden_states[LAYER][0, -1].numpy()
    assert [c.token_ids for c in candidates] == [[], [], []]
    for c in candidates:
        assert c.finished_by_eos
        assert not np.allclose(c.feature, instruction, atol=1e-3)
        np.testing.assert_allclose(c.feature, eos_state, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(c.mean_feature, c.feature)
        assert c.embedding_mean_feature is None  # not asked for
        assert c.cumulative_logprob == pytest.approx(float(torch.log_softmax(first, -1)[top]))
        assert c.mean_entropy == pytest.approx(float(_entropy(first)), abs=1e-4)


def test_an_empty_responses_embedding_mean_is_the_eos_tokens_embedding(tiny_model) -> None:
    ids = render_prompt(tiny_model, pb.Prompt(text="Write a poem."))
    config = SamplingConfig(k=2, max_new_tokens=5, temperature=0.0)  # EOS first (see above)
    candidates = list(sample(tiny_model, ids, config, LAYER, embedding_mean=True))[1:]
    eos = _forward(tiny_model, [*ids, tiny_model.tokenizer.eos_token_id]).hidden_states[0]
    for c in candidates:
        assert c.token_ids == []
        np.testing.assert_allclose(c.embedding_mean_feature, eos[0, -1], rtol=1e-6, atol=1e-7)


def test_the_embedding_mean_changes_nothing_else_and_is_only_computed_when_asked(
    tiny_model,
) -> None:
    ids = render_prompt(tiny_model, pb.Prompt(text="Write a poem."))
    config = SamplingConfig(k=6, max_new_tokens=8, seed=2)
    plain = list(sample(tiny_model, ids, config, LAYER, entropy=True))
    asked = list(sample(tiny_model, ids, config, LAYER, entropy=True, embedding_mean=True))
    np.testing.assert_array_equal(plain[0], asked[0])
    for without, full in zip(plain[1:], asked[1:], strict=True):
        assert without.embedding_mean_feature is None
        assert full.embedding_mean_feature is not None
        assert full.embedding_mean_feature.shape == (tiny_model.hidden_size,)
        assert (without.index, without.token_ids) == (full.index, full.token_ids)
        np.testing.assert_array_equal(without.feature, full.feature)
        np.testing.assert_array_equal(without.mean_feature, full.mean_feature)
        assert without.mean_entropy == full.mean_entropy
    off = list(sample(tiny_model, ids, config, LAYER, features=False, embedding_mean=True))
    assert all(c.embedding_mean_feature is None for c in off[1:])  # features off: nothing


def test_at_layer_zero_the_embedding_mean_is_the_mean(tiny_model) -> None:
    ids = render_prompt(tiny_model, pb.Prompt(text="List colours."))
    config = SamplingConfig(k=4, max_new_tokens=6, seed=5)
    for c in list(sample(tiny_model, ids, config, 0, embedding_mean=True))[1:]:
        np.testing.assert_array_equal(c.embedding_mean_feature, c.mean_feature)


@pytest.fixture(scope="module")
def tiny_gemma(tiny_checkpoint, tmp_path_factory):
    """A 2-layer random Gemma 3 with the tiny tokenizer: a model that scales its embeddings
    (by sqrt(hidden size)) before the first layer, and mixes sliding-window layers in."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from central.model import load_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    directory = tmp_path_factory.mktemp("tiny-gemma3")
    Gemma3ForCausalLM(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return load_model(str(directory))


def test_the_embedding_mean_is_hidden_state_0_as_the_model_scales_it(tiny_gemma) -> None:
    """Gemma multiplies its embeddings by sqrt(d) before the first layer: the embedding
    mean is that scaled state (what output_hidden_states[0] gives), not the table's rows."""
    ids = render_prompt(tiny_gemma, pb.Prompt(text="What is two plus three?"))
    config = SamplingConfig(k=4, max_new_tokens=6, seed=1)
    candidates = list(sample(tiny_gemma, ids, config, 1, embedding_mean=True))[1:]
    table = tiny_gemma.model.get_input_embeddings().weight
    for c in candidates:
        fed = _fed(tiny_gemma, c)
        out = _forward(tiny_gemma, ids + fed)
        expected = out.hidden_states[0][0, len(ids) :].mean(0)
        np.testing.assert_allclose(c.embedding_mean_feature, expected, rtol=1e-5, atol=1e-6)
        rows = table.detach()[torch.tensor(fed)].mean(0)
        np.testing.assert_allclose(expected, rows * 64**0.5, rtol=1e-5, atol=1e-6)  # scaled
        np.testing.assert_allclose(c.feature, out.hidden_states[1][0, -1], rtol=1e-4, atol=1e-5)


def test_entropy_is_only_computed_when_asked(tiny_model) -> None:
    ids = render_prompt(tiny_model, pb.Prompt(text="Write a poem."))
    config = SamplingConfig(k=4, max_new_tokens=6, seed=2)
    plain = list(sample(tiny_model, ids, config, LAYER))[1:]
    asked = list(sample(tiny_model, ids, config, LAYER, entropy=True))[1:]
    assert all(c.mean_entropy is None for c in plain)
    assert all(c.mean_entropy is not None and c.mean_entropy > 0 for c in asked)
    assert [c.token_ids for c in plain] == [c.token_ids for c in asked]  # same random stream


def test_cumulative_logprob_matches_the_model(tiny_model) -> None:
    ids, _, candidates = _run(tiny_model, "Write a poem.", k=6, max_new_tokens=8, seed=5)
    eos = next(iter(tiny_model.eos_token_ids))
    for candidate in candidates:
        scored = candidate.token_ids + ([eos] if candidate.finished_by_eos else [])
        logits = _forward(tiny_model, ids + scored).logits[0, len(ids) - 1 : -1]
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(scored)[:, None]).sum()
        assert candidate.cumulative_logprob == pytest.approx(float(expected), abs=1e-3)


def test_candidates_stream_in_the_order_they_finish(tiny_model) -> None:
    _, _, candidates = _run(tiny_model, "List colours.", k=12, max_new_tokens=10, seed=3)
    lengths = [len(c.token_ids) + (0 if c.finished_by_eos else 1) for c in candidates]
    assert lengths == sorted(lengths)


def test_same_seed_same_candidates_and_different_seed_differs(tiny_model) -> None:
    def texts(seed: int) -> list[tuple[int, ...]]:
        _, _, cands = _run(tiny_model, "Write a poem.", k=4, max_new_tokens=8, seed=seed)
        return [tuple(c.token_ids) for c in sorted(cands, key=lambda c: c.index)]

    assert texts(11) == texts(11)
    assert texts(11) != texts(12)


def test_greedy_matches_transformers_generate(tiny_model) -> None:
    ids, _, candidates = _run(
        tiny_model, "The quick brown fox", k=2, max_new_tokens=8, temperature=0.0
    )
    with torch.inference_mode():
        reference = tiny_model.model.generate(
            torch.tensor([ids]), max_new_tokens=8, do_sample=False
        )[0, len(ids) :].tolist()
    reference = [t for t in reference if t not in tiny_model.eos_token_ids]
    assert candidates[0].token_ids == reference[: len(candidates[0].token_ids)]
    assert candidates[0].token_ids == candidates[1].token_ids


def test_greedy_first_makes_candidate_zero_greedy_and_samples_the_others(tiny_model) -> None:
    prompt, sampled = "Write a poem.", dict(k=4, max_new_tokens=10, seed=21)
    _, _, mixed = _run(tiny_model, prompt, greedy_first=True, **sampled)
    _, _, again = _run(tiny_model, prompt, greedy_first=True, **sampled)
    _, _, greedy = _run(tiny_model, prompt, k=1, max_new_tokens=10, temperature=0.0)
    by_index = {c.index: c for c in mixed}
    assert by_index[0].token_ids == greedy[0].token_ids
    assert by_index[0].cumulative_logprob == pytest.approx(greedy[0].cumulative_logprob, abs=1e-4)
    np.testing.assert_allclose(by_index[0].feature, greedy[0].feature, atol=1e-5)
    np.testing.assert_allclose(by_index[0].mean_feature, greedy[0].mean_feature, atol=1e-5)
    others = {tuple(by_index[i].token_ids) for i in (1, 2, 3)}
    assert others != {tuple(greedy[0].token_ids)}  # sampled, not three more greedy rows
    assert [c.token_ids for c in mixed] == [c.token_ids for c in again]  # seeded


def test_top_k_one_is_greedy(tiny_model) -> None:
    _, _, greedy = _run(tiny_model, "Add two numbers", k=1, max_new_tokens=6, temperature=0.0)
    _, _, top1 = _run(tiny_model, "Add two numbers", k=1, max_new_tokens=6, top_k=1, seed=9)
    assert greedy[0].token_ids == top1[0].token_ids


def test_should_stop_cancels_between_steps(tiny_model) -> None:
    ids = render_prompt(tiny_model, pb.Prompt(text="Write a poem."))
    calls = []

    def stop_after_one_step() -> bool:
        calls.append(1)
        return len(calls) > 1

    config = SamplingConfig(k=8, max_new_tokens=200, seed=1)
    with pytest.raises(Cancelled):
        list(sample(tiny_model, ids, config, LAYER, should_stop=stop_after_one_step))
    assert len(calls) == 2


# ---------------------------------------------------------------- fast paths


@pytest.mark.parametrize("layer", [0, 2, 4])
def test_hooked_features_equal_output_hidden_states_at_first_middle_and_last_layer(
    tiny_model, layer: int
) -> None:
    """Index 0 is the embeddings, 1..N-1 block outputs, N after the final norm."""
    assert tiny_model.num_layers == 4
    ids = render_prompt(tiny_model, pb.Prompt(text="What is two plus three?"))
    config = SamplingConfig(k=6, max_new_tokens=10, seed=3)
    events = list(sample(tiny_model, ids, config, layer))
    direct = _forward(tiny_model, ids)
    np.testing.assert_allclose(events[0], direct.hidden_states[layer][0, -1], atol=1e-5)
    for candidate in events[1:]:
        out = _forward(tiny_model, ids + _fed(tiny_model, candidate))
        expected = out.hidden_states[layer][0, -1].numpy()
        np.testing.assert_allclose(candidate.feature, expected, rtol=1e-4, atol=1e-5)


def test_features_off_samples_the_same_tokens_without_features(tiny_model) -> None:
    ids = render_prompt(tiny_model, pb.Prompt(text="Write a poem."))
    config = SamplingConfig(k=8, max_new_tokens=10, seed=21)
    with_features = list(sample(tiny_model, ids, config, LAYER))
    without = list(sample(tiny_model, ids, config, LAYER, features=False))
    assert without[0].shape == (0,)
    assert len(without) == len(with_features)
    for plain, full in zip(without[1:], with_features[1:], strict=True):
        assert (plain.index, plain.token_ids) == (full.index, full.token_ids)
        assert plain.finished_by_eos == full.finished_by_eos
        assert plain.cumulative_logprob == pytest.approx(full.cumulative_logprob, abs=1e-5)
        assert plain.feature.shape == plain.mean_feature.shape == (0,)


def test_features_stay_exact_when_the_kv_cache_grows_past_its_first_buffer(tiny_model) -> None:
    """No EOS, so all rows run 100 steps: the cache buffer is reallocated on the way."""
    endless = dataclasses.replace(tiny_model, eos_token_ids=frozenset())
    ids = render_prompt(endless, pb.Prompt(text="List colours."))
    events = list(sample(endless, ids, SamplingConfig(k=3, max_new_tokens=100, seed=4), LAYER))
    assert [len(c.token_ids) for c in events[1:]] == [100, 100, 100]
    for candidate in events[1:]:
        out = _forward(endless, ids + candidate.token_ids)
        states = out.hidden_states[LAYER][0, len(ids) :].numpy()
        np.testing.assert_allclose(candidate.feature, states[-1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(candidate.mean_feature, states.mean(0), rtol=1e-4, atol=1e-5)


def test_growing_layer_holds_what_a_dynamic_layer_holds() -> None:
    grown, plain = GrowingLayer(), DynamicLayer()
    for length in (5, 1, 70, 1, 200):
        k, v = torch.randn(2, 3, length, 4), torch.randn(2, 3, length, 4)
        got, want = grown.update(k, v), plain.update(k, v)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    rows = torch.tensor([1, 1, 0])
    grown.reorder_cache(rows)
    plain.reorder_cache(rows)
    torch.testing.assert_close(grown.keys, plain.keys, rtol=0, atol=0)
    assert grown.get_seq_length() == plain.get_seq_length() == 277


@pytest.mark.slow  # several seconds; CI runs it
def test_inverse_cdf_draw_follows_the_probabilities_and_skips_zero_mass() -> None:
    generator = torch.Generator().manual_seed(0)
    probs = torch.zeros(3, 1000)  # not a multiple of the block size: padding is never drawn
    probs[0, [3, 500, 999]] = torch.tensor([0.2, 0.3, 0.5])
    probs[1, 257] = 1.0
    probs[2] = torch.softmax(torch.randn(1000), dim=-1)
    counts = torch.zeros_like(probs)
    draws = 20_000
    for _ in range(draws):
        counts[torch.arange(3), _draw(probs, generator)] += 1
    assert set(counts[0].nonzero()[:, 0].tolist()) == {3, 500, 999}
    assert counts[1, 257] == draws
    torch.testing.assert_close(counts / draws, probs, atol=0.015, rtol=0)


def test_onednn_linears_only_apply_inside_the_block(tiny_model) -> None:
    model = tiny_model.model
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    x = torch.randint(0, 100, (2, 5))
    with torch.inference_mode():
        stock = model(x).logits
        with pytest.raises(RuntimeError), onednn_linears(model):
            fast = model(x).logits
            raise RuntimeError("leave the block by an exception")
    assert all("forward" not in m.__dict__ for m in linears)
    torch.testing.assert_close(fast, stock, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("temperature", "top_p", "top_k", "draws"),
    [
        (1e-38, 1.0, 0, "argmax"),  # logits / t overflowed float32: NaN, then an index error
        (1.4e-45, 1.0, 0, "argmax"),  # float32's smallest denormal
        (1e-38, 0.5, 5, "argmax"),
        (3e38, 1.0, 0, "any"),  # nearly uniform
        (1.0, 1.4e-45, 0, "argmax"),  # the nucleus keeps the most likely token alone
        (1e-30, 1e-30, 2**32 - 1, "argmax"),  # top_k beyond the vocabulary: no filter
        (0.7, 1.0, 1, "argmax"),
    ],
)
def test_extreme_sampling_values_draw_real_tokens(
    temperature: float, top_p: float, top_k: int, draws: str
) -> None:
    from central.sampler import pick_next, read_draws

    torch.manual_seed(0)
    logits = torch.randn(6, 300) * 30
    logits[0, 7] = logits[0].max() + 1e-3  # a near tie
    config = SamplingConfig(k=6, temperature=temperature, top_p=top_p, top_k=top_k)
    drawn = pick_next(logits, config, torch.Generator().manual_seed(1), False)
    ids, logprobs, _ = read_draws(drawn.numpy())
    assert all(0 <= i < 300 for i in ids)
    assert all(np.isfinite(logprobs))
    if draws == "argmax":
        assert ids == logits.argmax(dim=-1).tolist()


def test_logits_that_are_not_finite_raise_a_sampling_error_not_an_index_error() -> None:
    from central.sampler import SamplingError, pick_next, read_draws

    def draw(config: SamplingConfig) -> None:
        read_draws(pick_next(logits, config, torch.Generator().manual_seed(1), False).numpy())

    logits = torch.randn(3, 300)
    logits[1] = float("nan")
    for config in (SamplingConfig(k=3), SamplingConfig(k=3, temperature=0.5, top_p=0.9)):
        with pytest.raises(SamplingError, match=r"not finite|not a distribution"):
            draw(config)
    with pytest.raises(SamplingError, match="not finite"):  # greedy draws, but its log p is NaN
        draw(SamplingConfig(k=3, temperature=0.0))


def test_the_nucleus_is_the_top_p_prefix_of_a_full_sort_ties_included_alone_or_batched() -> None:
    from central.sampler import _nucleus

    torch.manual_seed(0)
    logits = torch.randn(6, 5000) * torch.tensor([[0.5], [1.0], [3.0], [6.0], [9.0], [2.0]])
    logits[5] = logits[5].round()  # many exact ties, one of them at the boundary
    probs = torch.softmax(logits, dim=-1)
    for top_p in (1e-9, 0.3, 0.9, 0.999):  # nuclei from one token to past the first search
        ordered = torch.sort(probs, dim=-1, descending=True).values
        before = torch.nn.functional.pad(ordered.cumsum(dim=-1)[:, :-1], (1, 0))  # mass ahead
        least_kept = torch.where(before < top_p, ordered, torch.inf).amin(dim=-1, keepdim=True)
        kept = _nucleus(probs, top_p)
        assert torch.equal(kept, probs >= least_kept)
        assert kept.any(dim=-1).all() and kept[torch.arange(6), probs.argmax(dim=-1)].all()
        assert kept[5].sum() > (before[5] < top_p).sum()  # the ties a sort would have split
        for row in range(6):  # a row keeps the same tokens whatever shares its batch
            assert torch.equal(_nucleus(probs[row : row + 1], top_p), kept[row : row + 1])
    assert _nucleus(probs, 0.999).sum(dim=-1).max() > 256  # the search widened
