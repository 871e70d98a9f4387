"""Generation: the KV-cached PrefixLM prefill + causal decode equals recomputing the whole sequence every step."""

from __future__ import annotations

import pytest
import torch

from hrmkit.cores import build_core
from hrmkit.generate import core_outputs, generate, next_token_logits
from hrmkit.nn.attn_spec import AttnSpec
from hrmkit.nn.cache import KVCache
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
