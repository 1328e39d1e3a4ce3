"""The numerical gradient helpers themselves, on every backend."""

import numpy as np

from anynet import backend
from anynet.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    grad_check_sparse,
    rel_error,
)


def test_scalar_function_gradient(xp, device):
    x = xp.asarray([[1.0, -2.0], [0.5, 3.0]], dtype=xp.float64, device=device)
    before = backend.to_numpy(x)
    grad = eval_numerical_gradient(lambda v: xp.sum(v**3), x, verbose=False)
    np.testing.assert_allclose(backend.to_numpy(grad), 3 * before**2, rtol=1e-8)
    np.testing.assert_array_equal(backend.to_numpy(x), before)


def test_array_function_gradient(xp, device):
    x = xp.asarray([1.0, 2.0, 3.0], dtype=xp.float64, device=device)
    df = xp.asarray([0.5, -1.0, 2.0], dtype=xp.float64, device=device)
    grad = eval_numerical_gradient_array(lambda v: xp.sin(v), x, df)
    expected = np.cos([1.0, 2.0, 3.0]) * np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(backend.to_numpy(grad), expected, rtol=1e-8)


def test_sparse_check_finds_wrong_gradient(xp, device, capsys):
    x = xp.asarray([[1.0, 2.0], [3.0, 4.0]], dtype=xp.float64, device=device)
    good = grad_check_sparse(lambda v: xp.sum(v * v), x, 2 * x, num_checks=4, seed=0)
    bad = grad_check_sparse(lambda v: xp.sum(v * v), x, 3 * x, num_checks=4, seed=0)
    assert max(good) < 1e-8 and min(bad) > 0.1
    assert "relative error" in capsys.readouterr().out


def test_rel_error(xp, device):
    a = xp.asarray([1.0, 2.0], dtype=xp.float64, device=device)
    assert rel_error(a, a) == 0.0
    assert abs(rel_error(a, a * 1.1) - 0.1 / 2.1) < 1e-12
