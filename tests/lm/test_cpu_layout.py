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


def _packed_model():
    from hindsight.lm.cpu_layout import pack_linear_weights, packing_available

    if not packing_available():
        import pytest

        pytest.skip("this torch build has no oneDNN linear kernels")
    model = _llama(40, hidden=32, layers=2, heads=4, kv_heads=2, context=64, seed=0, init=0.3).eval()
    model.tie_weights()
    with torch.no_grad():
        ref = {n: model(input_ids=torch.arange(n * 6).reshape(n, 6) % 40).logits for n in (1, 3, 70)}
    transpose_linear_weights(model)
    return model, ref, pack_linear_weights(model, env={})


def test_packed_weights_give_the_same_outputs_for_every_row_count():
    from hindsight.lm.cpu_layout import PackedLinear

    model, ref, n = _packed_model()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert n == len(linears) > 0 and all(type(m) is PackedLinear for m in linears)
    before = model.state_dict()
    assert all(not k.endswith("_packed") for k in before)  # the copy is not part of the checkpoint
    with torch.no_grad():
        for rows, logits in ref.items():  # 1 and 70 rows: the plain path; 3 rows: the packed copy
            assert torch.allclose(model(input_ids=torch.arange(rows * 6).reshape(rows, 6) % 40).logits, logits,
                                  atol=1e-5)


def test_packed_copy_follows_an_in_place_update_and_gradients_use_the_weight():
    model, _, _ = _packed_model()
    lin = next(m for m in model.modules() if isinstance(m, nn.Linear))
    x = torch.randn(3, lin.in_features)
    with torch.no_grad():
        lin.weight.mul_(2.0)  # what an optimiser step does
        assert torch.allclose(lin(x), x @ lin.weight.T, atol=1e-5)
        lin.weight = nn.Parameter(torch.randn_like(lin.weight))  # replaced outright
        assert torch.allclose(lin(x), x @ lin.weight.T, atol=1e-5)
    x.requires_grad_(True)
    lin(x).sum().backward()  # with gradients on, the forward is the plain one (autograd sees the weight)
    assert lin.weight.grad is not None and torch.allclose(x.grad, lin.weight.sum(0).expand(3, -1), atol=1e-5)


def test_packing_respects_the_switch_and_the_size_limit():
    from hindsight.lm.cpu_layout import pack_linear_weights

    model = _llama(40, hidden=32, layers=1, heads=4, kv_heads=2, context=64, seed=0, init=0.3).eval()
    assert pack_linear_weights(model, env={"HINDSIGHT_CPU_PACK": "0"}) == 0
    assert pack_linear_weights(model, limit_bytes=16, env={}) == 0  # over the limit: no second copy
    assert pack_linear_weights(model, limit_bytes=16, env={"HINDSIGHT_CPU_PACK": "1"}) > 0
