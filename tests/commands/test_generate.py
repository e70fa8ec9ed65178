import torch

from shearing.commands.generate import greedy_generate
from tests.helpers import tiny_pair


def test_greedy_generate_equals_transformers_generate():
    ref, ours = tiny_pair(seed=4)
    prompt = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(5))
    expected = ref.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=10,
        do_sample=False,
        pad_token_id=0,
    )
    assert greedy_generate(ours, prompt, 10).tolist() == expected.tolist()


def test_generation_stops_once_every_row_produced_eos():
    _, ours = tiny_pair(seed=4)
    prompt = torch.randint(0, 97, (1, 6), generator=torch.Generator().manual_seed(5))
    first = greedy_generate(ours, prompt, 1)[0, -1].item()
    out = greedy_generate(ours, prompt, 10, eos_token_id=first)
    assert out.shape[1] == prompt.shape[1] + 1
