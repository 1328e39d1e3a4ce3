"""The numerical gradient helpers themselves, on every backend."""

import numpy as np
import pytest

from anynet import backends
from anynet.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    grad_check_sparse,
    rel_error,
)


def test_scalar_function_gradient(xp, device):
    x = xp.asarray([[1.0, -2.0], [0.5, 3.0]], dtype=xp.float64, device=device)
    before = backends.to_numpy(x)
    grad = eval_numerical_gradient(lambda v: xp.sum(v**3), x, verbose=False)
    np.testing.assert_allclose(backends.to_numpy(grad), 3 * before**2, rtol=1e-8)
    np.testing.assert_array_equal(backends.to_numpy(x), before)


def test_array_function_gradient(xp, device):
    x = xp.asarray([1.0, 2.0, 3.0], dtype=xp.float64, device=device)
    df = xp.asarray([0.5, -1.0, 2.0], dtype=xp.float64, device=device)
    grad = eval_numerical_gradient_array(lambda v: xp.sin(v), x, df)
    expected = np.cos([1.0, 2.0, 3.0]) * np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(backends.to_numpy(grad), expected, rtol=1e-8)


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


def test_f_closing_over_x_is_perturbed_in_place_or_refused(xp, device, backend_name):
    """The course's ``f`` ignores its argument and reads the array ``x`` was taken from.

    Where arrays are mutable the checks perturb ``x`` where it lies, so that works. JAX's arrays are immutable:
    such an ``f`` would give a zero gradient, so each check refuses it with an error that says what to write.
    """
    x = xp.asarray([[1.0, -2.0], [0.5, 3.0]], dtype=xp.float64, device=device)
    df = xp.asarray([[1.0, 2.0], [-1.0, 0.5]], dtype=xp.float64, device=device)
    before = backends.to_numpy(x)
    scalar, array = (lambda _: xp.sum(x**3)), (lambda _: x**3)
    if backends.get(backend_name).mutable:
        grad = eval_numerical_gradient(scalar, x, verbose=False)
        np.testing.assert_allclose(backends.to_numpy(grad), 3 * before**2, rtol=1e-8)
        grad = eval_numerical_gradient_array(array, x, df)
        np.testing.assert_allclose(backends.to_numpy(grad), 3 * before**2 * backends.to_numpy(df), rtol=1e-8)
        errors = grad_check_sparse(scalar, x, 3 * x**2, num_checks=3, seed=0)
        assert max(errors) < 1e-8
    else:
        for check in (lambda: eval_numerical_gradient(scalar, x, verbose=False),
                      lambda: eval_numerical_gradient_array(array, x, df),
                      lambda: grad_check_sparse(scalar, x, 3 * x**2, num_checks=3, seed=0)):
            with pytest.raises(ValueError, match="immutable") as exc_info:
                check()
            assert "must compute from its argument" in str(exc_info.value)
            assert "net.params['W1'] = W" in str(exc_info.value)
    np.testing.assert_array_equal(backends.to_numpy(x), before)


def test_functions_invariant_to_a_shift_are_not_mistaken_for_closures(xp, device):
    """Softmax's loss does not change when a row of scores shifts as a whole; its gradient is still checked."""
    x = xp.asarray([[0.2, -0.4, 1.0], [0.3, 0.1, -0.2]], dtype=xp.float64, device=device)

    def f(v):
        shifted = v - xp.max(v, axis=1, keepdims=True)
        return xp.sum(xp.log(xp.sum(xp.exp(shifted), axis=1)) - shifted[:, 0])

    grad = eval_numerical_gradient(f, x, verbose=False)
    p = np.exp(backends.to_numpy(x))
    p /= p.sum(axis=1, keepdims=True)
    p[:, 0] -= 1
    np.testing.assert_allclose(backends.to_numpy(grad), p, rtol=1e-7)


def test_the_courses_check_of_a_model_parameter_works_on_every_backend(backend_name):
    """``f = lambda _: model.loss(X, y)[0]`` reads the parameter from the model, not from its argument. Where
    arrays change in place the check perturbs the parameter where it lies; on JAX the model's dict gets each
    perturbed copy for the call (models register themselves with the check). The gradient is right either way."""
    import anynet
    from anynet.models import ThreeLayerConvNet

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((3, 6)), rng.integers(0, 4, 3)
    model = anynet.FullyConnectedNet([5], input_dim=6, num_classes=4, reg=0.1, weight_scale=0.5,
                                     dtype="float64", seed=0, backend=backend_name)
    _, grads = model.loss(X, y)
    for name in ("W1", "b2"):
        f = lambda _: model.loss(X, y)[0]  # noqa: E731 - the course's idiom, as the notebooks write it
        numeric = eval_numerical_gradient(f, model.params[name], verbose=False, h=1e-6)
        assert rel_error(grads[name], numeric) < 1e-7, name
    original = model.params["W1"]
    eval_numerical_gradient(lambda _: model.loss(X, y)[0], model.params["W1"], verbose=False)
    assert model.params["W1"] is original  # left as it was
    net = ThreeLayerConvNet(input_dim=(2, 4, 4), num_filters=2, filter_size=3, hidden_dim=3, num_classes=3,
                            weight_scale=0.3, dtype="float64", seed=1, backend=backend_name)
    Xc, yc = rng.standard_normal((2, 2, 4, 4)), rng.integers(0, 3, 2)
    _, grads = net.loss(Xc, yc)
    numeric = eval_numerical_gradient(lambda _: net.loss(Xc, yc)[0], net.params["W1"], verbose=False, h=1e-6)
    assert rel_error(grads["W1"], numeric) < 1e-6
