"""Generation: the KV-cached PrefixLM prefill + causal decode equals recomputing the whole sequence every step; the
static (padded, pre-allocated, compiled) path gives the same tokens as the dynamic reference."""

from __future__ import annotations

import pytest
import torch

from hrmkit.cores import build_core
from hrmkit.generate import core_outputs, generate, left_pad, next_token_logits, sample, static_step
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.cache import KVCache, StaticKVCache
from hrmkit.tasks.text import TextTask

VOCAB = 32
PROMPTS = [[1, 5, 9, 2], [1, 7, 2], [1, 3, 3, 2], [1, 8, 8, 8, 6, 2]]


def make_task(core: str = "hrm", variant: str = "text-tiny") -> TextTask:
    torch.manual_seed(0)
    task = TextTask(build_core(core, variant), vocab_size=VOCAB)
    with torch.no_grad():  # a sharper head, so greedy paths vary and near-ties are unlikely
        task.lm_head.weight.mul_(4.0)
    return task.eval()


def uncached(task: TextTask, prompt: list[int], steps: int, guidance_w: float = 0.0) -> list[int]:
    """Greedy decoding by re-running the full sequence (prompt as the PrefixLM prefix) at every step."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            spec = AttnSpec("prefixlm", prefix_lens=torch.tensor([len(prompt)]))
            logits = next_token_logits(task, torch.tensor([seq]), spec, None, guidance_w)
            seq.append(int(logits[0, -1].argmax()))
    return seq[len(prompt):]


@pytest.mark.parametrize("core,variant", [("hrm", "text-tiny"), ("transformer", "tiny")])
def test_cached_greedy_equals_uncached_recomputation(core, variant):
    task = make_task(core, variant)
    for prompt in PROMPTS[:2]:
        assert generate(task, [prompt], max_new_tokens=8) == [uncached(task, prompt, 8)]


def test_cached_step_logits_match_full_forward():
    task = make_task()
    prompt, cont = [1, 5, 9, 2], [4, 11, 17]
    full_ids = torch.tensor([prompt + cont])
    with torch.no_grad():
        full = task(full_ids, AttnSpec("prefixlm", prefix_lens=torch.tensor([len(prompt)])))
        cache = KVCache()
        outs = [task(torch.tensor([prompt]), AttnSpec("prefixlm", prefix_lens=torch.tensor([len(prompt)])), cache)]
        for t in cont:
            outs.append(task(torch.tensor([[t]]), AttnSpec("causal"), cache))
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)
    assert len(cache) == task.core.num_calls  # one entry per (call, layer); text-tiny has one layer per stack


def test_batched_equals_one_by_one_and_keeps_order():
    task = make_task()
    batched = generate(task, PROMPTS, max_new_tokens=6)
    single = [generate(task, [p], max_new_tokens=6)[0] for p in PROMPTS]
    assert batched == single
    assert all(len(out) == 6 for out in batched)


def test_stop_tokens_end_each_prompt_independently():
    task = make_task()
    free = generate(task, PROMPTS, max_new_tokens=6)
    stop = free[0][2]
    outs = generate(task, PROMPTS, max_new_tokens=6, stop_ids=[stop])
    for out, ref in zip(outs, free):
        cut = ref.index(stop) + 1 if stop in ref else len(ref)
        assert out == ref[:cut]
    assert outs[0][-1] == stop and len(outs[0]) <= 3


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    task = make_task()
    a = generate(task, PROMPTS, 6, temperature=1.5, seed=3)
    b = generate(task, PROMPTS, 6, temperature=1.5, seed=3)
    assert a == b
    assert generate(task, PROMPTS, 6, temperature=1.0, top_k=1, seed=5) == generate(task, PROMPTS, 6)
    assert all(0 <= t < VOCAB for out in a for t in out)


def test_auto_guidance_cached_equals_uncached_and_reads_the_first_h_cycle():
    task = make_task()
    prompt = PROMPTS[0]
    ids = torch.tensor([prompt])
    spec = AttnSpec("prefixlm", prefix_lens=torch.tensor([len(prompt)]))
    with torch.no_grad():
        final, early = core_outputs(task, ids, spec, after="H")
        torch.testing.assert_close(final, task.hidden(ids, spec))
        # h' = z_H after the first H call: the output of a core truncated to its first H cycle
        one_cycle = TextTask(build_core("hrm", "text-tiny", H_cycles=1, bp_steps=2), vocab_size=VOCAB)
        one_cycle.load_state_dict(task.state_dict())
        torch.testing.assert_close(early, one_cycle.eval().hidden(ids, spec))
    guided = generate(task, [prompt], 6, guidance_w=0.5)
    assert guided == [uncached(task, prompt, 6, guidance_w=0.5)]
    assert generate(task, [prompt], 6, guidance_w=0.0) == generate(task, [prompt], 6)
    with pytest.raises(ValueError, match="no such call"):
        generate(make_task("transformer", "tiny"), [prompt], 2, guidance_w=0.1)


def test_input_errors_and_mode_restored():
    task = make_task().train()
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(task, [[1], []], 2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(task, [[VOCAB + 1]], 2)
    with pytest.raises(ValueError, match="RoPE table"):
        generate(task, [[1] * 250], 10)
    assert generate(task, PROMPTS, 0) == [[] for _ in PROMPTS]
    generate(task, PROMPTS[:1], 2)
    assert task.training


# -- the static path: left padding, its masks, compile ---------------------------------------------------------------
@pytest.mark.parametrize("core,variant", [("hrm", "text-tiny"), ("transformer", "tiny"), ("trm", "tiny")])
def test_static_padded_batch_equals_dynamic_reference(core, variant):
    task = make_task(core, variant)
    static = generate(task, PROMPTS, 7, cache="static", compile=False)
    assert static == generate(task, PROMPTS, 7, cache="dynamic")
    assert static == [generate(task, [p], 7, cache="static", compile=False)[0] for p in PROMPTS]


def test_static_cache_mask_under_left_padding():
    cache = StaticKVCache(torch.tensor([2, 0]), prompt_len=4, max_len=6)
    m = cache.mask(4)[:, 0].int()  # prefill: rows of queries at slots 0..3
    # row 0 (2 pads): pads see only themselves; real tokens see every real prompt token (bidirectional prefix)
    assert m[0].tolist() == [[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0]]
    assert m[1].tolist() == [[1, 1, 1, 1, 0, 0]] * 4
    torch.testing.assert_close(cache.positions(4), torch.tensor([[0, 0, 0, 1], [0, 1, 2, 3]]))
    cache.advance(4)
    d = cache.mask(1)[:, 0, 0].int()  # first decode query at slot 4: causal over the written slots, pads hidden
    assert d.tolist() == [[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]]
    assert cache.positions(1).tolist() == [[2], [4]]
    causal = StaticKVCache(torch.tensor([1]), prompt_len=3, max_len=4, prefix=False).mask(3)[0, 0].int()
    assert causal.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0]]
    cache.advance(1)
    with pytest.raises(ValueError, match="full"):
        cache.advance(2)


def test_static_prefill_logits_under_padding_match_each_prompt_alone():
    task = make_task()
    ids, pad = left_pad(PROMPTS, pad_id=0, device=torch.device("cpu"))
    with torch.no_grad():
        cache = StaticKVCache(pad, ids.shape[1], ids.shape[1] + 4)
        static_step(task, ids, cache)
        cache.advance(ids.shape[1])
        step = static_step(task, torch.tensor([[3]] * len(PROMPTS)), cache)  # one decode step after the prompts
        for r, prompt in enumerate(PROMPTS):
            alone = task(torch.tensor([prompt + [3]]), AttnSpec("prefixlm", prefix_lens=torch.tensor([len(prompt)])))
            torch.testing.assert_close(step[r], alone[0, -1].float(), atol=1e-5, rtol=1e-5)


def test_cpu_decode_reads_only_the_filled_slots():
    """The CPU prefill and decode steps attend over written slots only (the buffers are allocated uninitialised):
    NaN in every slot before it is written changes nothing."""
    task = make_task()
    ids, pad = left_pad(PROMPTS, pad_id=0, device=torch.device("cpu"))
    logits = []
    shapes: dict = {}
    with torch.no_grad():
        for poison in (False, True):
            cache = StaticKVCache(pad, ids.shape[1], ids.shape[1] + 8)
            if poison:  # every buffer NaN from the start, as uninitialised memory may be
                for key, shape in shapes.items():
                    kv = cache.layer(*key)
                    kv.k, kv.v = torch.full(shape, float("nan")), torch.full(shape, float("nan"))
            steps = [static_step(task, ids, cache)]
            cache.advance(ids.shape[1])
            shapes = {key: kv.k.shape for key, kv in cache._layers.items()}
            assert cache.window() == ids.shape[1] + 1
            for token in (3, 4):
                steps.append(static_step(task, torch.tensor([[token]] * len(PROMPTS)), cache))
                cache.advance(1)
            logits.append(torch.stack(steps))
    assert torch.isfinite(logits[1]).all()
    torch.testing.assert_close(logits[0], logits[1], atol=0, rtol=0)


def test_static_guidance_and_causal_task_match_the_reference():
    task = make_task()
    assert (generate(task, PROMPTS, 6, guidance_w=0.5, compile=False)
            == generate(task, PROMPTS, 6, guidance_w=0.5, cache="dynamic"))
    torch.manual_seed(0)
    causal = TextTask(build_core("hrm", "text-tiny"), vocab_size=VOCAB, attention="causal").eval()
    assert generate(causal, PROMPTS, 5, compile=False) == generate(causal, PROMPTS, 5, cache="dynamic")
    assert generate(causal, PROMPTS, 5) != generate(task, PROMPTS, 5)  # a different mask, different model


@pytest.mark.slow  # one inductor compile: ~10 s with a warm cache, minutes cold on a loaded 2-core machine
def test_compiled_decode_step_is_one_graph_and_gives_the_eager_tokens():
    """fullgraph=True: any graph break in the decode step raises here. Guided and padded."""
    task = make_task()
    eager = generate(task, PROMPTS, 6, guidance_w=0.5, compile=False)
    assert generate(task, PROMPTS, 6, guidance_w=0.5, compile=True) == eager


@pytest.mark.slow  # three inductor compiles with GEMM autotuning: ~1 min with a warm cache
def test_frozen_decode_step_gives_the_eager_tokens_and_follows_new_weights():
    """freeze=True bakes the weights into the graph; after an in-place weight update it compiles again and decodes
    with the new weights, never the frozen ones."""
    from hrmkit.generate import FROZEN_MIN_BATCH

    task = make_task()
    prompts = (PROMPTS * FROZEN_MIN_BATCH)[:FROZEN_MIN_BATCH]  # smaller batches keep the unfrozen step
    eager = generate(task, prompts, 6, compile=False)
    assert generate(task, prompts, 6, compile=True, freeze=True) == eager
    with torch.no_grad():
        task.lm_head.weight.mul_(-1.0)  # a different argmax everywhere
    flipped = generate(task, prompts, 6, compile=False)
    assert flipped != eager
    with pytest.warns(UserWarning, match="weights changed"):
        assert generate(task, prompts, 6, compile=True, freeze=True) == flipped


def test_frozen_step_is_kept_per_task_until_its_weights_change():
    """The bookkeeping of freeze=True, without compiling: one frozen step per task and weights version."""
    from hrmkit.generate import frozen_static_step, weights_version

    a, b = make_task(), make_task()
    step = frozen_static_step(a)
    assert frozen_static_step(a) is step and frozen_static_step(b) is not step
    before = weights_version(a)
    with torch.no_grad():
        a.lm_head.weight.add_(1.0)  # an optimizer-style in-place update bumps the version
    assert weights_version(a) != before
    with pytest.warns(UserWarning, match="weights changed"):
        assert frozen_static_step(a) is not step
    a.lm_head.weight = torch.nn.Parameter(a.lm_head.weight.detach().clone())  # a new tensor: a new address
    with pytest.warns(UserWarning, match="weights changed"):
        frozen_static_step(a)


def test_top_p_nucleus():
    logits = torch.tensor([[2.0, 1.0, 0.5, -3.0]])
    probs = torch.softmax(logits, -1)[0]
    gen = torch.Generator().manual_seed(0)
    draws = {int(sample(logits, 1.0, None, gen, top_p=float(probs[0]) + 1e-3)) for _ in range(200)}
    assert draws == {0, 1}  # the first token alone falls just short of top_p: the second joins, no third
    assert {int(sample(logits, 1.0, None, gen, top_p=0.01)) for _ in range(50)} == {0}
    task = make_task()
    assert generate(task, PROMPTS, 4, temperature=1.0, top_p=1e-6, seed=2) == generate(task, PROMPTS, 4)


def test_static_path_argument_errors():
    task = make_task()
    with pytest.raises(ValueError, match="top_p"):
        generate(task, PROMPTS, 2, top_p=0.0)
    with pytest.raises(ValueError, match="cache must be"):
        generate(task, PROMPTS, 2, cache="paged")
    with pytest.raises(ValueError, match="compile must be"):
        generate(task, PROMPTS, 2, compile="yes")
    with pytest.raises(ValueError, match="prompt_len"):
        StaticKVCache(torch.tensor([0]), prompt_len=5, max_len=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_decode_attention_matches_sdpa_over_a_masked_static_cache(dtype):
    from hrmkit.nn.cache import decode_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, n, 16, generator=g).to(dtype) for n in (1, 40, 40))
    allowed = torch.rand(3, 1, 1, 40, generator=g) > 0.4
    allowed[..., 0] = True  # every row sees at least one slot, as a decode step sees its own token
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=allowed)
    out = decode_attention(q, k, v, allowed)
    assert out.dtype == dtype and out.shape == (3, 2, 1, 16)
    torch.testing.assert_close(out.float(), ref, atol=1e-5 if dtype == torch.float32 else 2e-2, rtol=1e-3)
