"""Input-major linear weights: same model (values, tying, outputs), faster sgemm layout."""

import torch
from torch import nn

from hindsight.lm.cpu_layout import transpose_linear_weights
from hindsight.lm.toy import _llama


def test_transposed_weights_keep_values_tying_and_outputs():
    model = _llama(40, hidden=32, layers=2, heads=4, kv_heads=2, context=64, seed=0, init=0.3).eval()
    model.tie_weights()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.tensor([[1, 5, 7, 3, 9, 2]])
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    n = transpose_linear_weights(model)
    assert n == len({id(m.weight) for m in linears}) > 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            assert m.weight.stride(0) == 1 and not m.weight.is_contiguous()  # [out, in] view of [in, out] storage
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        out = model(input_ids=ids).logits
    assert torch.allclose(out, ref, atol=1e-5)
    assert transpose_linear_weights(model) == 0  # idempotent
