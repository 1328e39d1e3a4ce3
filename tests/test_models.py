"""TwoLayerNet and FullyConnectedNet: numeric gradients, independent answers, validation."""

import math

import numpy as np
import pytest
from conftest import param_loss, reference_fc_net

import anynet
from anynet import backends
from anynet.gradient_check import eval_numerical_gradient, rel_error


@pytest.mark.parametrize("reg", [0.0, 0.7])
def test_two_layer_net_matches_reference(backend_name, reg):
    rng = np.random.default_rng(0)
    model = anynet.TwoLayerNet(input_dim=12, hidden_dims=8, num_classes=4, reg=reg, dtype="float64",
                               seed=0, backend=backend_name)
    params = {k: rng.standard_normal(backends.to_numpy(v).shape) * 0.5 for k, v in model.params.items()}
    for k, v in params.items():
        model.params[k] = v  # as the course's notebook does: a NumPy array assigned by hand
    X, y = rng.standard_normal((5, 3, 2, 2)), rng.integers(0, 4, 5)
    ref_scores, ref_loss, ref_grads = reference_fc_net(params, X, y, reg, 2)
    np.testing.assert_allclose(backends.to_numpy(model.loss(X)), ref_scores, rtol=1e-10)
    loss, grads = model.loss(X, y)
    assert math.isclose(float(loss), ref_loss, rel_tol=1e-10)
    assert set(grads) == set(model.params)
    for k in grads:
        np.testing.assert_allclose(backends.to_numpy(grads[k]), ref_grads[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reg", [0.0, 3.14])
@pytest.mark.parametrize("hidden_dims", [[7], [6, 5]])
def test_fully_connected_numeric_gradients(backend_name, reg, hidden_dims):
    rng = np.random.default_rng(1)
    model = anynet.FullyConnectedNet(hidden_dims, input_dim=10, num_classes=4, reg=reg, weight_scale=5e-2,
                                     dtype="float64", seed=1, backend=backend_name)
    X, y = rng.standard_normal((3, 10)), rng.integers(0, 4, 3)
    loss, grads = model.loss(X, y)
    for name, w in model.params.items():
        numeric = eval_numerical_gradient(param_loss(model, name, X, y), w, verbose=False)
        assert rel_error(numeric, grads[name]) < 1e-5, name


def test_initialization_follows_the_course(backend_name):
    model = anynet.FullyConnectedNet([30, 20], input_dim=40, num_classes=5, weight_scale=0.1, seed=3,
                                     backend=backend_name)
    shapes = {k: tuple(v.shape) for k, v in model.params.items()}
    assert shapes == {"W1": (40, 30), "b1": (30,), "W2": (30, 20), "b2": (20,), "W3": (20, 5), "b3": (5,)}
    W1 = backends.to_numpy(model.params["W1"])
    assert W1.dtype == np.float32 and 0.08 < W1.std() < 0.12
    assert not backends.to_numpy(model.params["b2"]).any()


def test_reg_can_change_after_construction(backend_name):
    rng = np.random.default_rng(2)
    model = anynet.TwoLayerNet(input_dim=6, hidden_dims=5, num_classes=3, dtype="float64", seed=0,
                               backend=backend_name)
    X, y = rng.standard_normal((4, 6)), rng.integers(0, 3, 4)
    loss0, grads0 = model.loss(X, y)
    model.reg = 2.0
    loss1, grads1 = model.loss(X, y)
    W = {k: backends.to_numpy(model.params[k]) for k in ("W1", "W2")}
    expected = float(loss0) + 0.5 * 2.0 * sum((w**2).sum() for w in W.values())
    assert math.isclose(float(loss1), expected, rel_tol=1e-12)
    np.testing.assert_allclose(backends.to_numpy(grads1["W1"]), backends.to_numpy(grads0["W1"]) + 2.0 * W["W1"])
    np.testing.assert_array_equal(backends.to_numpy(grads1["b1"]), backends.to_numpy(grads0["b1"]))


def test_predict_returns_argmax_labels(xp, backend_name):
    rng = np.random.default_rng(3)
    model = anynet.TwoLayerNet(input_dim=6, hidden_dims=5, num_classes=3, seed=0, weight_scale=1.0,
                               backend=backend_name)
    X = rng.standard_normal((9, 6))
    pred = model.predict(X)
    assert xp.isdtype(pred.dtype, "integral")
    np.testing.assert_array_equal(backends.to_numpy(pred), backends.to_numpy(model.loss(X)).argmax(axis=1))


def test_inputs_cast_to_model_dtype(xp, backend_name):
    for dtype, other in (("float32", np.float64), ("float64", np.float32)):
        model = anynet.TwoLayerNet(input_dim=4, hidden_dims=3, num_classes=2, dtype=dtype, backend=backend_name)
        scores = model.loss(np.ones((2, 4), dtype=other))
        assert scores.dtype == getattr(xp, dtype)


def test_two_layer_net_defaults_to_float64_as_the_course_does(xp, backend_name):
    model = anynet.TwoLayerNet(input_dim=4, hidden_dims=3, num_classes=2, backend=backend_name)
    assert model.dtype == "float64" and model.params["W1"].dtype == xp.float64
    assert model.loss(np.ones((2, 4), dtype=np.float32)).dtype == xp.float64


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"hidden_dims": [10, 0]}, ValueError, "hidden_dims"),
        ({"hidden_dims": 5}, TypeError, "hidden_dims"),
        ({"hidden_dims": [4], "dropout": 1.0}, ValueError, "dropout"),
        ({"hidden_dims": [4], "dtype": "float16"}, ValueError, "dtype"),
        ({"hidden_dims": [4], "reg": -1}, ValueError, "reg"),
        ({"hidden_dims": [4], "weight_scale": 0}, ValueError, "weight_scale"),
        ({"hidden_dims": [4], "input_dim": 2.5}, TypeError, "input_dim"),
    ],
)
def test_constructor_validates(kwargs, error, match):
    with pytest.raises(error, match=match):
        anynet.FullyConnectedNet(**kwargs)


def test_loss_validates_inputs(backend_name):
    model = anynet.TwoLayerNet(input_dim=6, hidden_dims=3, num_classes=2, backend=backend_name)
    with pytest.raises(ValueError, match="6 features"):
        model.loss(np.ones((2, 5)))
    with pytest.raises(ValueError, match="y must have shape"):
        model.loss(np.ones((2, 6)), np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="integer"):
        model.loss(np.ones((2, 6)), np.zeros(2))
