"""The course's notebooks on anynet: the first notebook's toy checks, the second's test cells, the course's names.

Expected numbers come from the float64 NumPy net written out below (the
homework's maths, without its ``reg * b`` slip in the bias gradients), never
from anynet; the only numbers taken from the notebook are the issue's
acceptance figures: the toy loss and the toy training's final loss.
"""

# The course draws from NumPy's global generator, and these tests replay its draws.
# ruff: noqa: NPY002

import math

import numpy as np
import pytest
from cifar_files import write_cifar10
from conftest import reference_fc_net

import anynet
from anynet import backends
from anynet.gradient_check import eval_numerical_gradient
from anynet.neural_net import TwoLayerNet

# The first notebook's toy sizes.
D, H, C, N = 4, 10, 3, 5
NOTEBOOK_TOY_LOSS = 1.071696123862817  # printed by the notebook for reg 0.05
HOMEWORK_FINAL_LOSS = 0.014497865475252903  # printed by the notebook: its train() adds reg * b to the bias gradients
FINAL_LOSS = 0.0144978646  # the same draws without that slip


def rel_error(x, y):
    """The notebooks' relative error."""
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


def reference_loss(params, X, y=None, reg=0.0, bias_reg=False):
    """The first notebook's net in float64 NumPy: W1 (H, D), W2 (C, H); ``bias_reg`` adds the homework's slip."""
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    h = X @ W1.T + b1
    a = np.maximum(h, 0)
    scores = a @ W2.T + b2
    if y is None:
        return scores
    n = len(y)
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), y]).mean() + 0.5 * reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
    dscores = p.copy()
    dscores[np.arange(n), y] -= 1
    dscores /= n
    dh = (dscores @ W2) * (h > 0)
    grads = {"W1": dh.T @ X + reg * W1, "b1": dh.sum(axis=0), "W2": dscores.T @ a + reg * W2,
             "b2": dscores.sum(axis=0)}
    if bias_reg:
        grads["b1"] += reg * b1
        grads["b2"] += reg * b2
    return loss, grads


def reference_train(params, X, y, X_val, y_val, learning_rate, learning_rate_decay, reg, num_iters, batch_size,
                    bias_reg=False):
    """The homework's ``train`` on ``reference_loss``, drawing from NumPy's global generator as it does."""
    params = {k: v.copy() for k, v in params.items()}
    iterations_per_epoch = max(len(X) / batch_size, 1)
    losses, train_acc, val_acc = [], [], []
    for it in range(num_iters):
        idx = np.random.choice(len(X), batch_size)
        loss, grads = reference_loss(params, X[idx], y[idx], reg, bias_reg)
        losses.append(loss)
        for k in params:
            params[k] += -learning_rate * grads[k]
        if it % iterations_per_epoch == 0:
            train_acc.append(np.mean(reference_loss(params, X[idx]).argmax(axis=1) == y[idx]))
            val_acc.append(np.mean(reference_loss(params, X_val).argmax(axis=1) == y_val))
            learning_rate *= learning_rate_decay
    return params, losses, train_acc, val_acc


def toy_data():
    """The notebook's ``init_toy_data()``."""
    np.random.seed(1)
    X = 10 * np.random.randn(N, D)
    return X, np.array([0, 1, 2, 2, 1])


def toy_params():
    """The toy weights, drawn as the notebook's ``init_toy_model()`` draws them, leaving the global state as it does."""
    np.random.seed(0)
    W1 = 1e-1 * np.random.randn(H, D)
    W2 = 1e-1 * np.random.randn(C, H)
    return {"W1": W1, "b1": np.zeros(H), "W2": W2, "b2": np.zeros(C)}


def toy_net(backend_name):
    """The notebook's ``init_toy_model()``, the net on ``backend_name``."""
    np.random.seed(0)
    return TwoLayerNet(D, H, C, std=1e-1, backend=backend_name)


def host(params):
    """NumPy copies of a dict of arrays."""
    return {k: backends.to_numpy(v) for k, v in params.items()}


# --- The first notebook: the toy net --------------------------------------------------------------------------


def test_toy_weights_are_the_courses_draws(backend_name):
    net = toy_net(backend_name)
    state = np.random.get_state()[1].copy()
    params = toy_params()
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # the net drew no more and no fewer numbers
    got = host(net.params)
    assert {k: v.shape for k, v in got.items()} == {"W1": (H, D), "b1": (H,), "W2": (C, H), "b2": (C,)}
    for k in params:
        assert got[k].dtype == np.float64
        np.testing.assert_array_equal(got[k], params[k])


def test_toy_scores_and_loss(backend_name):
    X, y = toy_data()
    params, net = toy_params(), toy_net(backend_name)
    scores = backends.to_numpy(net.loss(X))
    assert scores.shape == (N, C)
    assert np.sum(np.abs(scores - reference_loss(params, X))) < 1e-12
    loss, _ = net.loss(X, y, reg=0.05)
    assert abs(float(loss) - reference_loss(params, X, y, reg=0.05)[0]) < 1e-12
    if backend_name == "numpy":
        assert abs(float(loss) - NOTEBOOK_TOY_LOSS) < 1e-12


def test_toy_gradients(backend_name):
    X, y = toy_data()
    params, net = toy_params(), toy_net(backend_name)
    _, ref_grads = reference_loss(params, X, y, reg=0.05)
    loss, grads = net.loss(X, y, reg=0.05)
    assert set(grads) == set(net.params)
    for name in grads:
        analytic = backends.to_numpy(grads[name])
        assert analytic.shape == params[name].shape
        np.testing.assert_allclose(analytic, ref_grads[name], rtol=1e-10, atol=1e-14)
        if backend_name == "jax":  # immutable arrays: perturb a NumPy copy, handed to the net at each call
            def f(W, name=name):
                net.params[name] = W
                return net.loss(X, y, reg=0.05)[0]

            numerical = eval_numerical_gradient(f, backends.to_numpy(net.params[name]).copy(), verbose=False)
        else:  # the notebook's cell: numerical gradients through net.params, perturbed in place
            numerical = eval_numerical_gradient(lambda W: net.loss(X, y, reg=0.05)[0], net.params[name],
                                                verbose=False)
        assert rel_error(backends.to_numpy(numerical), analytic) < 1e-8, name


def test_reference_draws_are_the_homeworks():
    """The reference replays the homework's draws: with its bias slip it ends at the loss the notebook prints."""
    X, y = toy_data()
    params = toy_params()  # the notebook trains right after init_toy_model(): its draws continue from here
    _, losses, _, _ = reference_train(params, X, y, X, y, 1e-1, 0.95, 5e-6, 100, 200, bias_reg=True)
    assert abs(losses[-1] - HOMEWORK_FINAL_LOSS) < 1e-12


def test_toy_training(backend_name):
    X, y = toy_data()
    params, net = toy_params(), toy_net(backend_name)
    state = np.random.get_state()
    stats = net.train(X, y, X, y, learning_rate=1e-1, reg=5e-6, num_iters=100, verbose=False)
    np.random.set_state(state)
    ref_params, ref_losses, ref_train_acc, ref_val_acc = reference_train(params, X, y, X, y, 1e-1, 0.95, 5e-6, 100,
                                                                         200)
    assert set(stats) == {"loss_history", "train_acc_history", "val_acc_history"}
    losses = stats["loss_history"]
    assert len(losses) == 100 and all(type(v) is float for v in losses)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-10)
    # 5 rows and batches of 200: an "epoch" is one iteration, so accuracy is measured (and the rate decayed) at each.
    assert stats["train_acc_history"] == [float(a) for a in ref_train_acc]
    assert stats["val_acc_history"] == [float(a) for a in ref_val_acc]
    for k, v in host(net.params).items():
        np.testing.assert_allclose(v, ref_params[k], rtol=1e-9, atol=1e-13)
    assert abs(losses[-1] - FINAL_LOSS) < 1e-7
    if backend_name == "numpy":
        assert abs(losses[-1] - ref_losses[-1]) < 1e-13


def test_train_takes_backend_arrays_and_matches_numpy_inputs(backend_name, xp):
    X, y = toy_data()
    net = toy_net(backend_name)
    state = np.random.get_state()
    expected = net.train(X, y, X, y, learning_rate=1e-1, num_iters=30)
    net = toy_net(backend_name)
    np.random.set_state(state)
    device = backends.get(backend_name).device
    Xd, yd = xp.asarray(X, device=device), xp.asarray(y, device=device)
    assert net.train(Xd, yd, Xd, yd, learning_rate=1e-1, num_iters=30) == expected


def test_epochs_are_a_true_division_as_in_the_homework():
    # 50 rows in batches of 20: the homework's iterations_per_epoch is 2.5, so it measures at iterations 0, 5, 10.
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((50, D)), rng.integers(0, C, 50)
    net = TwoLayerNet(D, H, C, seed=0)
    stats = net.train(X, y, X[:7], y[:7], batch_size=20, num_iters=11)
    assert len(stats["loss_history"]) == 11
    assert len(stats["train_acc_history"]) == len(stats["val_acc_history"]) == 3
    assert all(a * 20 == round(a * 20) for a in stats["train_acc_history"])
    assert all(a * 7 == round(a * 7) for a in stats["val_acc_history"])


def test_train_reads_the_device_once_per_epoch(backend_name, monkeypatch):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((400, D)), rng.integers(0, C, 400)
    net = TwoLayerNet(D, H, C, seed=0, backend=backend_name)
    reads = []
    to_numpy = net.backend.to_numpy
    monkeypatch.setattr(net.backend, "to_numpy", lambda x: reads.append(tuple(x.shape)) or to_numpy(x))
    stats = net.train(X, y, X[:50], y[:50], batch_size=20, num_iters=100)
    # Epochs of 20 iterations start at 0, 20, 40, 60, 80: the losses come back at each and at the end (six reads),
    # then each accuracy history in one read. No read per iteration.
    assert reads == [(1,), (20,), (20,), (20,), (20,), (19,), (5,), (5,)]
    assert len(stats["loss_history"]) == 100 and len(stats["val_acc_history"]) == 5


def test_verbose_prints_every_hundred_iterations(capsys):
    X, y = toy_data()
    stats = toy_net("numpy").train(X, y, X, y, num_iters=201, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    losses = stats["loss_history"]
    assert lines == [f"iteration {it} / 201: loss {losses[it]!r}" for it in (0, 100, 200)]


def test_seed_draws_from_a_private_generator():
    np.random.seed(5)
    state = np.random.get_state()
    net = TwoLayerNet(D, H, C, std=1e-1, seed=3)
    rng = np.random.RandomState(3)
    np.testing.assert_array_equal(net.params["W1"], 1e-1 * rng.randn(H, D))
    np.testing.assert_array_equal(net.params["W2"], 1e-1 * rng.randn(C, H))
    X, y = np.random.default_rng(0).standard_normal((20, D)), np.arange(20) % C
    first = net.train(X, y, X, y, batch_size=8, num_iters=12)
    assert all(a == b for a, b in zip(np.random.get_state(), state, strict=True) if not isinstance(a, np.ndarray))
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])  # the global generator was never drawn from
    again = TwoLayerNet(D, H, C, std=1e-1, seed=3).train(X, y, X, y, batch_size=8, num_iters=12)
    assert again == first
    assert TwoLayerNet(D, H, C, std=1e-1, seed=4).train(X, y, X, y, batch_size=8, num_iters=12) != first


@pytest.mark.parametrize("dtype", ["float32", np.float32])
def test_float32_on_request(backend_name, xp, dtype):
    X, _ = toy_data()
    net = toy_net(backend_name)
    np.random.seed(0)
    net32 = TwoLayerNet(D, H, C, std=1e-1, dtype=dtype, backend=backend_name)
    assert all(v.dtype == xp.float32 for v in net32.params.values())
    scores = net32.loss(X)
    assert scores.dtype == xp.float32
    np.testing.assert_allclose(backends.to_numpy(scores), backends.to_numpy(net.loss(X)), rtol=1e-5, atol=1e-6)
    predicted = backends.to_numpy(net32.predict(X))
    assert predicted.shape == (N,) and predicted.dtype.kind == "i"


def test_hand_assigned_numpy_weights_are_used(backend_name):
    X, _ = toy_data()
    net = toy_net(backend_name)
    params = {k: np.random.default_rng(1).standard_normal(backends.to_numpy(v).shape) for k, v in net.params.items()}
    net.params.update(params)
    np.testing.assert_allclose(backends.to_numpy(net.loss(X)), reference_loss(params, X), rtol=1e-12)


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda: TwoLayerNet(0, H, C), ValueError, "input_size"),
        (lambda: TwoLayerNet(D, 2.5, C), TypeError, "hidden_size"),
        (lambda: TwoLayerNet(D, H, C, std=-1), ValueError, "std"),
        (lambda: TwoLayerNet(D, H, C, dtype="float16"), ValueError, "dtype"),
        (lambda: TwoLayerNet(D, H, C, backend="jaxx"), ValueError, "backend"),
        (lambda: TwoLayerNet(D, H, C).loss(np.zeros((2, D + 1))), ValueError, "X must have shape"),
        (lambda: TwoLayerNet(D, H, C).loss(np.zeros((2, D)), np.zeros(3, dtype=int)), ValueError, "y must"),
        (lambda: TwoLayerNet(D, H, C).loss(np.zeros((2, D)), np.array([0, C])), ValueError, "y must hold labels"),
        (lambda: TwoLayerNet(D, H, C).loss(np.zeros((2, D)), np.zeros(2)), TypeError, "y (integer labels)"),
        (lambda: TwoLayerNet(D, H, C).loss(np.zeros((2, D)), np.zeros(2, dtype=int), reg=-1), ValueError, "reg"),
        (lambda: TwoLayerNet(D, H, C).train(np.zeros((2, D)), [0, 1], np.zeros((1, D)), [0], batch_size=0),
         ValueError, "batch_size"),
        (lambda: TwoLayerNet(D, H, C).train(np.zeros((2, D)), [0, 1], np.zeros((1, 3)), [0]), ValueError, "X_val"),
        (lambda: TwoLayerNet(D, H, C).train(np.zeros((2, D)), [0, 1], np.zeros((1, D)), [0, 1]), ValueError,
         "y_val"),
        (lambda: TwoLayerNet(D, H, C).train(np.zeros((2, D)), [0, 1], np.zeros((1, D)), [0], learning_rate=0),
         ValueError, "learning_rate"),
    ],
)
def test_bad_arguments_are_named(call, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        call()


# --- The second notebook's test cells, with only their imports changed ----------------------------------------


COURSE_FC_NET_NAMES = (
    "TwoLayerNet", "FullyConnectedNet", "affine_forward", "affine_backward", "relu_forward", "relu_backward",
    "svm_loss", "softmax_loss", "affine_relu_forward", "affine_relu_backward",
)


def star_import(module):
    """What ``from <module> import *`` binds, as a dict."""
    names = {}
    exec(f"from {module} import *", names)  # noqa: S102 - a fixed module name, the notebooks' own import line
    names.pop("__builtins__")
    return names


def test_fc_net_two_layer_net_cell():
    names = star_import("anynet.fc_net")
    TwoLayerNet = names["TwoLayerNet"]  # noqa: N806 - the cell's name
    np.random.seed(231)
    # ---- the cell, as written but for seed=0: its check of the weights' spread fails by chance for a few in a
    # hundred unseeded draws (250 samples estimate a standard deviation to within 10% at about 2 sigma) ----
    N, D, H, C = 3, 5, 50, 7
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=N)

    std = 1e-2
    model = TwoLayerNet(input_dim=D, hidden_dims=H, num_classes=C, weight_scale=std, seed=0)

    W1_std = abs(model.params["W1"].std() - std)
    b1 = model.params["b1"]
    W2_std = abs(model.params["W2"].std() - std)
    b2 = model.params["b2"]
    assert W1_std < std / 10, "First layer weights do not seem right"
    assert np.all(b1 == 0), "First layer biases do not seem right"
    assert W2_std < std / 10, "Second layer weights do not seem right"
    assert np.all(b2 == 0), "Second layer biases do not seem right"

    model.params["W1"] = np.linspace(-0.7, 0.3, num=D * H).reshape(D, H)
    model.params["b1"] = np.linspace(-0.1, 0.9, num=H)
    model.params["W2"] = np.linspace(-0.3, 0.4, num=H * C).reshape(H, C)
    model.params["b2"] = np.linspace(-0.9, 0.1, num=C)
    X = np.linspace(-5.5, 4.5, num=N * D).reshape(D, N).T
    scores = model.loss(X)
    correct_scores = np.asarray(
        [[11.53165108, 12.2917344, 13.05181771, 13.81190102, 14.57198434, 15.33206765, 16.09215096],
         [12.05769098, 12.74614105, 13.43459113, 14.1230412, 14.81149128, 15.49994135, 16.18839143],
         [12.58373087, 13.20054771, 13.81736455, 14.43418138, 15.05099822, 15.66781506, 16.2846319]])
    scores_diff = np.abs(scores - correct_scores).sum()
    assert scores_diff < 1e-6, "Problem with test-time forward pass"

    y = np.asarray([0, 5, 1])
    loss, grads = model.loss(X, y)
    correct_loss = 3.4702243556
    assert abs(loss - correct_loss) < 1e-10, "Problem with training-time loss"

    model.reg = 1.0
    loss, grads = model.loss(X, y)
    correct_loss = 26.5948426952
    assert abs(loss - correct_loss) < 1e-10, "Problem with regularization loss"

    for reg in [0.0, 0.7]:
        model.reg = reg
        loss, grads = model.loss(X, y)
        for name in sorted(grads):
            f = lambda _: model.loss(X, y)[0]  # noqa: E731, B023 - the cell's code
            grad_num = eval_numerical_gradient(f, model.params[name], verbose=False)
            assert rel_error(grad_num, grads[name]) < 1e-6, (reg, name)


def test_fc_net_fully_connected_cell():
    names = star_import("anynet.fc_net")
    FullyConnectedNet = names["FullyConnectedNet"]  # noqa: N806 - the cell's name
    np.random.seed(231)
    # ---- the cell, as written but for seed=0, which fixes the weights: numerical gradients of unseeded draws
    # straddle a ReLU's kink (and then disagree) in a few runs in a hundred ----
    N, D, H1, H2, C = 2, 15, 20, 30, 10
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=(N,))

    for reg in [0, 3.14]:
        model = FullyConnectedNet([H1, H2], input_dim=D, num_classes=C,
                                  reg=reg, weight_scale=5e-2, dtype=np.float64, seed=0)

        loss, grads = model.loss(X, y)
        params = host(model.params)
        assert all(v.dtype == np.float64 for v in params.values())
        _, ref_loss, ref_grads = reference_fc_net(params, X, y, reg, 3)
        assert abs(float(loss) - ref_loss) < 1e-12
        if reg == 0:
            assert abs(float(loss) - math.log(C)) < 0.05  # small weights: near-uniform scores

        for name in sorted(grads):
            np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-9, atol=1e-14)
            f = lambda _: model.loss(X, y)[0]  # noqa: E731, B023 - the cell's code
            grad_num = eval_numerical_gradient(f, model.params[name], verbose=False, h=1e-5)
            assert rel_error(grad_num, grads[name]) < 1e-5, (reg, name)


def test_fc_nets_follow_the_courses_dtypes():
    from anynet.fc_net import FullyConnectedNet, TwoLayerNet

    # The course's modular TwoLayerNet computes in NumPy's float64; its FullyConnectedNet defaults to float32.
    assert all(v.dtype == np.float64 for v in TwoLayerNet(input_dim=6, hidden_dims=4, num_classes=3).params.values())
    assert all(v.dtype == np.float32 for v in FullyConnectedNet([4], input_dim=6, num_classes=3).params.values())
    for dtype in (np.float64, np.dtype("float64"), "float64"):
        net = FullyConnectedNet([4], input_dim=6, num_classes=3, dtype=dtype)
        assert all(v.dtype == np.float64 for v in net.params.values())
    with pytest.raises(ValueError, match="dtype"):
        FullyConnectedNet([4], input_dim=6, num_classes=3, dtype=np.int32)
    # The course's FullyConnectedNet keeps its dropout settings here.
    assert FullyConnectedNet([4], input_dim=6, num_classes=3, dropout=0.5).dropout_param["p"] == 0.5


# --- The course's names -----------------------------------------------------------------------------------------


def test_star_import_of_fc_net_gives_the_courses_names():
    import anynet.layer_utils
    import anynet.layers
    import anynet.models

    names = star_import("anynet.fc_net")
    assert set(COURSE_FC_NET_NAMES) <= set(names)
    assert set(names) == set(anynet.fc_net.__all__)
    assert names["TwoLayerNet"] is anynet.models.TwoLayerNet
    assert names["FullyConnectedNet"] is anynet.models.FullyConnectedNet
    for name in names:
        home = anynet.layers if hasattr(anynet.layers, name) else anynet.layer_utils
        if not name[0].isupper():
            assert names[name] is getattr(home, name), name


def test_every_module_and_name_the_notebooks_import_resolves():
    # Each notebook import line with cs231n. / nndl. changed to anynet.
    imports = {
        "anynet.data_utils": ["load_CIFAR10", "get_CIFAR10_data"],
        "anynet.neural_net": ["TwoLayerNet"],
        "anynet.gradient_check": ["eval_numerical_gradient", "eval_numerical_gradient_array"],
        "anynet.solver": ["Solver"],
        "anynet.layer_utils": ["affine_relu_forward", "affine_relu_backward"],
        "anynet.layers": ["affine_forward", "affine_backward", "relu_forward", "relu_backward", "svm_loss",
                          "softmax_loss"],
        "anynet.vis_utils": ["visualize_grid"],
    }
    for module, wanted in imports.items():
        names = {}
        exec(f"from {module} import {', '.join(wanted)}", names)  # noqa: S102 - fixed names
        assert all(callable(names[w]) for w in wanted), module
    assert anynet.data_utils.load_CIFAR10 is anynet.data.load_CIFAR10
    assert anynet.vis_utils.visualize_grid is anynet.data.vis.visualize_grid


def test_show_net_weights_cell():
    from anynet.vis_utils import visualize_grid

    np.random.seed(0)
    net = TwoLayerNet(32 * 32 * 3, 10, 10)
    W1 = net.params["W1"]
    W1 = W1.T.reshape(32, 32, 3, -1).transpose(3, 0, 1, 2)
    grid = visualize_grid(W1, padding=3).astype("uint8")
    assert grid.shape == (4 * 32 + 3 * 3, 4 * 32 + 3 * 3, 3)
    assert grid.max() == 255 and grid[32:35].max() == 0  # each image spans 0..255; padding rows stay black


# --- The course's data functions --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A small CIFAR-10 look-alike in the official format, and the arrays written."""
    return write_cifar10(tmp_path_factory.mktemp("cifar"), n_per_batch=30, n_test=40)


def test_load_cifar10_returns_the_courses_float64_images(cifar):
    from anynet.data_utils import load_CIFAR10, load_CIFAR_batch

    folder, (X_train, y_train, X_test, y_test) = cifar
    Xtr, Ytr, Xte, Yte = load_CIFAR10(str(folder))
    assert Xtr.dtype == Xte.dtype == np.float64 and Xtr.shape == (150, 32, 32, 3) and Xte.shape == (40, 32, 32, 3)
    assert Ytr.dtype.kind == Yte.dtype.kind == "i"
    np.testing.assert_array_equal(Xtr, X_train)
    np.testing.assert_array_equal(Ytr, y_train)
    np.testing.assert_array_equal(Xte, X_test)
    np.testing.assert_array_equal(Yte, y_test)
    Xtr -= np.mean(Xtr, axis=0)  # the first notebook's in-place step, which uint8 arrays refuse
    X, Y = load_CIFAR_batch(folder / "data_batch_2")
    assert X.dtype == np.float64
    np.testing.assert_array_equal(X, X_train[30:60])
    np.testing.assert_array_equal(Y, y_train[30:60])
    with pytest.raises(TypeError, match="root"):
        load_CIFAR10(None)


def test_get_cifar10_data_is_the_courses(cifar):
    from anynet.data_utils import get_CIFAR10_data

    folder, (X_train, y_train, X_test, y_test) = cifar
    data = get_CIFAR10_data(num_training=100, num_validation=20, num_test=30, cifar10_dir=folder)
    # The course's steps, written out.
    Xtr, Xval, Xte = (X.astype(np.float64) for X in (X_train[:100], X_train[100:120], X_test[:30]))
    mean_image = np.mean(Xtr, axis=0)
    expected = {
        "X_train": (Xtr - mean_image).transpose(0, 3, 1, 2), "y_train": y_train[:100],
        "X_val": (Xval - mean_image).transpose(0, 3, 1, 2), "y_val": y_train[100:120],
        "X_test": (Xte - mean_image).transpose(0, 3, 1, 2), "y_test": y_test[:30],
    }
    assert set(data) == set(expected)
    for k, v in expected.items():
        assert data[k].dtype == v.dtype and data[k].shape == v.shape, k
        np.testing.assert_allclose(data[k], v, rtol=0, atol=1e-12, err_msg=k)
    raw = get_CIFAR10_data(num_training=100, num_validation=20, num_test=30, subtract_mean=False, cifar10_dir=folder)
    np.testing.assert_array_equal(raw["X_val"], Xval.transpose(0, 3, 1, 2))


def test_two_layer_search_example_runs(cifar, repo_script, capsys):
    folder, _ = cifar
    example = repo_script("examples/two_layer_search.py")
    result = example.main(["--data-dir", str(folder), "--num-training", "120", "--num-validation", "30",
                           "--num-test", "40", "--num-iters", "30", "--batch-size", "20", "--rates", "1e-3", "2e-3",
                           "--decays", "0.9", "--hidden-size", "8"])
    out = capsys.readouterr().out
    assert 0 <= result["subopt_val_acc"] <= 1 and 0 <= result["test_acc"] <= 1
    assert result["best_rate"] in (1e-3, 2e-3) and result["best_decay"] == 0.9
    assert out.count("validation accuracy") == 4  # the sub-optimal net, two trials, the best
    assert f"best validation accuracy {result['best_val_acc']:.3f}" in out


def test_the_second_assignments_imports_resolve():
    """The ConvolutionalNetworks, BatchNormalization and FullyConnectedNets notebooks (2018 and later), with
    cs231n. changed to anynet.: every name they import is there, and is the code's own."""
    imports = {
        "anynet.layers": ["conv_forward_naive", "conv_backward_naive", "max_pool_forward_naive",
                          "max_pool_backward_naive", "spatial_batchnorm_forward", "spatial_batchnorm_backward",
                          "spatial_groupnorm_forward", "spatial_groupnorm_backward", "layernorm_forward",
                          "layernorm_backward", "batchnorm_backward_alt", "affine_forward", "softmax_loss"],
        "anynet.fast_layers": ["conv_forward_fast", "conv_backward_fast", "max_pool_forward_fast",
                               "max_pool_backward_fast"],
        "anynet.layer_utils": ["conv_relu_forward", "conv_relu_backward", "conv_relu_pool_forward",
                               "conv_relu_pool_backward", "conv_bn_relu_forward", "conv_bn_relu_backward",
                               "affine_relu_forward"],
        "anynet.classifiers.cnn": ["ThreeLayerConvNet"],
        "anynet.fc_net": ["FullyConnectedNet", "TwoLayerNet"],
    }
    for module, wanted in imports.items():
        names = {}
        exec(f"from {module} import {', '.join(wanted)}", names)  # noqa: S102 - fixed names
        assert all(callable(names[w]) for w in wanted), module
    from anynet.fast_layers import conv_forward_fast
    from anynet.fc_net import FullyConnectedNet, TwoLayerNet
    from anynet.models import ThreeLayerConvNet
    from anynet.nn.conv import conv_forward_fast as home

    assert star_import("anynet.classifiers.cnn")["ThreeLayerConvNet"] is ThreeLayerConvNet
    assert conv_forward_fast is home

    net = FullyConnectedNet([4, 3], input_dim=6, num_classes=2, normalization="layernorm", dropout_keep_ratio=0.75)
    assert net.dropout_param["p"] == 0.25 and {"gamma1", "beta2"} <= set(net.params) and net.bn_params == []
    assert FullyConnectedNet([4], input_dim=6, num_classes=2, dropout_keep_ratio=1).dropout_param == {}
    assert TwoLayerNet(input_dim=6, hidden_dim=7, num_classes=2).params["W1"].shape == (6, 7)
    with pytest.raises(ValueError, match="give one"):
        FullyConnectedNet([4], input_dim=6, dropout=0.5, dropout_keep_ratio=0.5)
    with pytest.raises(ValueError, match="normalization must be one of"):
        FullyConnectedNet([4], input_dim=6, normalization="groupnorm")
