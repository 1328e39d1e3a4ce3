"""The same parameters and inputs give the same answers on every backend."""

import numpy as np
import pytest
from conftest import tolerance

import anynet
from anynet import backends


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reg", [0.0, 0.5])
def test_scores_loss_and_grads_agree_with_numpy(backend_name, dtype, reg):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 3, 4, 4)), rng.integers(0, 10, 16)
    kwargs = dict(input_dim=48, num_classes=10, reg=reg, weight_scale=0.1, dtype=dtype, seed=5)
    ref = anynet.FullyConnectedNet([20, 15], backend="numpy", **kwargs)
    model = anynet.FullyConnectedNet([20, 15], backend=backend_name, **kwargs)
    rtol = tolerance(dtype)
    for k in ref.params:
        np.testing.assert_array_equal(backends.to_numpy(model.params[k]), ref.params[k])
    np.testing.assert_allclose(backends.to_numpy(model.loss(X)), ref.loss(X), rtol=rtol, atol=rtol)
    loss, grads = model.loss(X, y)
    ref_loss, ref_grads = ref.loss(X, y)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=rtol)
    for k in ref_grads:
        np.testing.assert_allclose(backends.to_numpy(grads[k]), ref_grads[k], rtol=rtol, atol=rtol * 1e-2)
