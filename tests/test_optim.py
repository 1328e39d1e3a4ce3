"""Update rules: trajectories against float64 NumPy and torch.optim, defaults, state, validation, Solver runs."""

import math

import numpy as np
import pytest
from array_api_compat import device as device_of

from anynet import FullyConnectedNet, Solver, backends, optim

RULES = ["sgd", "sgd_momentum", "nesterov_momentum", "rmsprop", "adam"]

# A quadratic bowl f(w) = 1/2 w^T A w - c^T w: its gradient A w - c depends on
# w, so a rule that goes wrong at any step changes every later step.
_RNG = np.random.default_rng(0)
_M = _RNG.standard_normal((6, 6))
A = _M @ _M.T / 6 + 0.1 * np.eye(6)
C = _RNG.standard_normal(6)
W0 = _RNG.standard_normal(6)


def _grad(w):
    """Gradient of the quadratic bowl at float64 NumPy ``w``."""
    return A @ w - C


def _np(x):
    """``x`` on the host as float64 NumPy."""
    return np.asarray(backends.to_numpy(x), dtype=np.float64)


# ---------------------------------------------------------------- independent float64 references


def _reference(rule, w, steps, **h):
    """The CS231n update rules written out in NumPy, one loop per rule."""
    traj = []
    lr = h["learning_rate"]
    if rule == "sgd":
        for _ in range(steps):
            w = w - lr * _grad(w)
            traj.append(w)
    elif rule == "sgd_momentum":
        v = np.zeros_like(w)
        for _ in range(steps):
            v = h["momentum"] * v - lr * _grad(w)
            w = w + v
            traj.append(w)
    elif rule == "nesterov_momentum":
        # Iterates u = w + mu * v of the look-ahead method, where the gradient
        # is taken (see test_nesterov_reference_is_the_look_ahead_method).
        mu, v, u = h["momentum"], np.zeros_like(w), w
        for _ in range(steps):
            v_new = mu * v - lr * _grad(u)
            u = u + v_new + mu * (v_new - v)
            v = v_new
            traj.append(u)
    elif rule == "rmsprop":
        s = np.zeros_like(w)
        for _ in range(steps):
            g = _grad(w)
            s = h["decay_rate"] * s + (1 - h["decay_rate"]) * g**2
            w = w - lr * g / (np.sqrt(s) + h["epsilon"])
            traj.append(w)
    elif rule == "adam":
        b1, b2, eps = h["beta1"], h["beta2"], h["epsilon"]
        m, v = np.zeros_like(w), np.zeros_like(w)
        for t in range(1, steps + 1):
            g = _grad(w)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g**2
            w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
            traj.append(w)
    return traj


HYPER = {
    "sgd": [{"learning_rate": 0.1}],
    "sgd_momentum": [{"learning_rate": 0.05, "momentum": 0.9}, {"learning_rate": 0.2, "momentum": 0.3}],
    "nesterov_momentum": [{"learning_rate": 0.05, "momentum": 0.9}, {"learning_rate": 0.2, "momentum": 0.3}],
    # A large epsilon makes where it sits (outside the square root) matter.
    "rmsprop": [{"learning_rate": 0.01, "decay_rate": 0.99, "epsilon": 1e-8},
                {"learning_rate": 0.05, "decay_rate": 0.9, "epsilon": 0.1}],
    "adam": [{"learning_rate": 0.01, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
             {"learning_rate": 0.05, "beta1": 0.5, "beta2": 0.9, "epsilon": 0.1}],
}
CASES = [(rule, h) for rule in RULES for h in HYPER[rule]]


def _anynet_trajectory(rule, xp, device, steps, config):
    """Run ``optim.<rule>`` for ``steps`` steps on the bowl, on backend ``xp``."""
    w = xp.asarray(W0, device=device)
    traj = []
    for _ in range(steps):
        dw = xp.asarray(_grad(_np(w)), device=device)
        w, config = getattr(optim, rule)(w, dw, config)
        traj.append(_np(w))
    return traj, config


@pytest.mark.parametrize(("rule", "hyper"), CASES)
def test_rule_matches_numpy_reference(xp, device, rule, hyper):
    steps = 12
    got, config = _anynet_trajectory(rule, xp, device, steps, dict(hyper))
    want = _reference(rule, W0, steps, **hyper)
    for k in range(steps):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14, err_msg=f"step {k + 1}")
    if rule == "adam":
        assert config["t"] == steps


def test_nesterov_reference_is_the_look_ahead_method():
    # Check the reference itself: tracking the look-ahead point u = w + mu * v,
    # the classical Nesterov method w <- w + v', v' = mu v - lr grad(w + mu v)
    # gives the same iterates u.
    mu, lr, steps = 0.9, 0.05, 12
    w, v, us = W0, np.zeros(6), []
    for _ in range(steps):
        v = mu * v - lr * _grad(w + mu * v)
        w = w + v
        us.append(w + mu * v)
    ref = _reference("nesterov_momentum", W0, steps, learning_rate=lr, momentum=mu)
    np.testing.assert_allclose(np.array(ref), np.array(us), rtol=1e-12)


# ---------------------------------------------------------------- torch.optim


def _torch_trajectory(opt_factory, steps):
    """Iterates of a ``torch.optim`` optimizer on the bowl, in float64."""
    torch = pytest.importorskip("torch")
    p = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    opt = opt_factory(torch, [p])
    traj = []
    for _ in range(steps):
        opt.zero_grad()
        p.grad = torch.tensor(_grad(p.detach().numpy()), dtype=torch.float64)
        opt.step()
        traj.append(p.detach().numpy().copy())
    return traj


def _torch_factory(rule, h):
    """A factory building the torch.optim optimizer equivalent to ``rule`` with hyperparameters ``h``."""
    lr = h["learning_rate"]
    if rule == "sgd":
        return lambda torch, ps: torch.optim.SGD(ps, lr=lr)
    if rule in ("sgd_momentum", "nesterov_momentum"):
        # torch keeps b = mu * b + g and steps by lr * b (or lr * (g + mu * b)
        # with nesterov); CS231n keeps v = mu * v - lr * g. With a constant lr,
        # v = -lr * b at every step, so both give the same iterates.
        nesterov = rule == "nesterov_momentum"
        return lambda torch, ps: torch.optim.SGD(ps, lr=lr, momentum=h["momentum"], nesterov=nesterov)
    if rule == "rmsprop":
        # torch's alpha is CS231n's decay_rate; both add eps outside the square root.
        return lambda torch, ps: torch.optim.RMSprop(ps, lr=lr, alpha=h["decay_rate"], eps=h["epsilon"])
    # torch adds eps to sqrt(v) / sqrt(1 - beta2**t), as CS231n adds it to sqrt(v_hat).
    return lambda torch, ps: torch.optim.Adam(ps, lr=lr, betas=(h["beta1"], h["beta2"]), eps=h["epsilon"])


@pytest.mark.parametrize(("rule", "hyper"), CASES)
def test_rule_matches_torch_optim(rule, hyper):
    steps = 12
    want = _torch_trajectory(_torch_factory(rule, hyper), steps)
    got, _ = _anynet_trajectory(rule, backends.get("numpy").xp, "cpu", steps, dict(hyper))
    for k in range(steps):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-11, atol=1e-13, err_msg=f"step {k + 1}")


def test_torch_comparison_sees_epsilon_placement():
    # The eps = 0.1 cases above would fail if either side put eps inside the
    # square root: that variant is far from torch's iterates.
    h = HYPER["rmsprop"][1]
    torch_traj = _torch_trajectory(_torch_factory("rmsprop", h), 5)
    w, s = W0, np.zeros(6)
    for _ in range(5):
        g = _grad(w)
        s = h["decay_rate"] * s + (1 - h["decay_rate"]) * g**2
        w = w - h["learning_rate"] * g / np.sqrt(s + h["epsilon"])
    assert np.abs(w - torch_traj[-1]).max() > 1e-3


def test_momentum_trajectories_differ_from_torch_once_lr_changes():
    # The two conventions agree only while lr is constant: after a learning-rate
    # decay CS231n's velocity keeps the old lr's scale, torch's buffer does not.
    torch = pytest.importorskip("torch")
    p = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.05, momentum=0.9)
    w, config = W0, {"learning_rate": 0.05, "momentum": 0.9}
    for step in range(6):
        if step == 3:
            opt.param_groups[0]["lr"] = config["learning_rate"] = 0.01
        p.grad = torch.tensor(_grad(p.detach().numpy()), dtype=torch.float64)
        opt.step()
        w, config = optim.sgd_momentum(w, _grad(w), config)
    assert np.abs(w - p.detach().numpy()).max() > 1e-4


# ---------------------------------------------------------------- beyond the course: AdamW, PyTorch's Nesterov SGD


def test_adamw_matches_torch_adamw():
    h = {"learning_rate": 0.05, "beta1": 0.9, "beta2": 0.99, "epsilon": 1e-8, "weight_decay": 0.1}
    want = _torch_trajectory(lambda torch, ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.9, 0.99), eps=1e-8,
                                                                 weight_decay=0.1), 12)
    got, config = _anynet_trajectory("adamw", backends.get("numpy").xp, "cpu", 12, dict(h))
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
    assert config["t"] == 12
    _, defaults = optim.adamw(np.ones(2), np.ones(2))
    assert defaults["weight_decay"] == 1e-2  # torch.optim.AdamW's default too


def test_nesterov_sgd_matches_torch_sgd_with_nesterov():
    h = {"learning_rate": 0.05, "momentum": 0.9}
    want = _torch_trajectory(lambda torch, ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True), 12)
    got, _ = _anynet_trajectory("nesterov_sgd", backends.get("numpy").xp, "cpu", 12, dict(h))
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("rule", sorted(optim.UPDATE_RULES))
def test_weight_decay_is_decoupled(xp, device, rule):
    """``weight_decay`` shrinks the weight by learning_rate * weight_decay before the rule's own step: with a zero
    gradient and fresh state, that is the whole update."""
    w = xp.asarray(W0, device=device)
    got, _ = optim.UPDATE_RULES[rule](w, xp.zeros_like(w), {"learning_rate": 0.1, "weight_decay": 0.5})
    np.testing.assert_allclose(_np(got), W0 * (1 - 0.1 * 0.5), rtol=1e-12)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.UPDATE_RULES[rule](w, w, {"weight_decay": -1.0})


# ---------------------------------------------------------------- defaults, state, validation

DEFAULTS = {
    "sgd": {"learning_rate": 1e-2},
    "sgd_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "nesterov_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "rmsprop": {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
}
STATE = {"sgd": [], "sgd_momentum": ["velocity"], "nesterov_momentum": ["velocity"],
         "rmsprop": ["cache"], "adam": ["m", "v"]}


def test_update_rules_registry():
    # The course's five, AdamW and PyTorch's Nesterov SGD.
    assert sorted(optim.UPDATE_RULES) == sorted([*RULES, "adamw", "nesterov_sgd"])
    assert all(optim.UPDATE_RULES[r] is getattr(optim, r) for r in optim.UPDATE_RULES)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("config", [None, {}])
def test_defaults_filled(rule, config):
    w, dw = np.ones(3), np.full(3, 0.5)
    config = None if config is None else dict(config)  # a fresh {}: the rule writes into the dict it is given
    _, out = getattr(optim, rule)(w, dw, config)
    for k, v in DEFAULTS[rule].items():
        assert out[k] == v
    if rule == "adam":
        assert out["t"] == 1


@pytest.mark.parametrize("rule", RULES)
def test_given_hyperparameters_are_kept(rule):
    given = {k: v / 2 for k, v in DEFAULTS[rule].items()}
    _, out = getattr(optim, rule)(np.ones(3), np.ones(3), dict(given))
    for k, v in given.items():
        assert out[k] == v


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_created_lazily_like_the_parameter(xp, device, rule, dtype):
    rng = np.random.default_rng(1)
    dt = getattr(xp, dtype)
    w = xp.asarray(rng.standard_normal((4, 3)), dtype=dt, device=device)
    dw = xp.asarray(rng.standard_normal((4, 3)), dtype=dt, device=device)
    w_before, dw_before = _np(w), _np(dw)
    next_w, config = getattr(optim, rule)(w, dw, None)
    assert next_w.dtype == dt and device_of(next_w) == device_of(w)
    assert backends.name_of(next_w) == backends.name_of(w)
    for name in STATE[rule]:
        s = config[name]
        assert s.dtype == dt and s.shape == w.shape and device_of(s) == device_of(w)
        assert backends.name_of(s) == backends.name_of(w)
    # First-step state is what zeros give after one update.
    d = _np(dw)
    first = {
        "velocity": -DEFAULTS[rule]["learning_rate"] * d,
        "cache": 0.01 * d**2,
        "m": 0.1 * d,
        "v": 0.001 * d**2,
    }
    rtol = 1e-6 if dtype == "float32" else 1e-12
    for name in STATE[rule]:
        np.testing.assert_allclose(_np(config[name]), first[name], rtol=rtol, atol=1e-30)
    # Arguments are left alone.
    np.testing.assert_array_equal(_np(w), w_before)
    np.testing.assert_array_equal(_np(dw), dw_before)


@pytest.mark.parametrize("rule", RULES)
def test_the_callers_config_gets_the_new_state_as_in_the_course(rule):
    """The course's rules write their defaults and new state into the config they are given and return it: the
    notebooks read config['velocity'] after a call. The arrays passed in are left alone."""
    config = {"learning_rate": 0.02}
    w, dw = np.ones(3), np.ones(3)
    _, out = getattr(optim, rule)(w, dw, config)
    assert out is config and config["learning_rate"] == 0.02
    assert set(DEFAULTS[rule]) | set(STATE[rule]) <= set(config)
    before = {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for k, v in config.items()}
    _, out2 = getattr(optim, rule)(w, dw, config)
    assert out2 is config
    if STATE[rule]:
        key = STATE[rule][0]
        assert not np.array_equal(config[key], before[key])  # the caller's dict holds the newer state
        np.testing.assert_array_equal(before[key], out[key] if key == "t" else before[key])
    np.testing.assert_array_equal(w, np.ones(3))
    np.testing.assert_array_equal(dw, np.ones(3))


BAD = [
    ("learning_rate", 0.0), ("learning_rate", -1e-3), ("learning_rate", math.nan), ("learning_rate", math.inf),
    ("learning_rate", "0.1"), ("learning_rate", True), ("learning_rate", None),
    ("momentum", 1.0), ("momentum", -0.1), ("momentum", math.nan),
    ("decay_rate", 1.0), ("decay_rate", -0.5),
    ("beta1", 1.0), ("beta1", -0.1), ("beta2", 1.5), ("beta2", math.nan),
    ("epsilon", 0.0), ("epsilon", -1e-8), ("epsilon", math.inf),
]


@pytest.mark.parametrize(("rule", "name", "value"), [(r, n, v) for r in RULES for n, v in BAD if n in DEFAULTS[r]])
def test_bad_hyperparameter_named(rule, name, value):
    with pytest.raises(ValueError, match=name):
        getattr(optim, rule)(np.ones(2), np.ones(2), {name: value})


@pytest.mark.parametrize("rule", RULES)
def test_edge_hyperparameters_accepted(rule):
    edge = {"momentum": 0.0, "decay_rate": 0.0, "beta1": 0.0, "beta2": 0.0, "learning_rate": 10.0, "epsilon": 1.0}
    config = {k: v for k, v in edge.items() if k in DEFAULTS[rule]}
    w, _ = getattr(optim, rule)(np.ones(2), np.ones(2), config)
    assert np.all(np.isfinite(w))


@pytest.mark.parametrize("rule", RULES)
def test_config_must_be_a_dict(rule):
    with pytest.raises(TypeError, match="config"):
        getattr(optim, rule)(np.ones(2), np.ones(2), [("learning_rate", 0.1)])


# ---------------------------------------------------------------- Solver runs

SOLVER_LR = {"sgd": 0.5, "sgd_momentum": 0.1, "nesterov_momentum": 0.1, "rmsprop": 3e-3, "adam": 2e-2}


def _blobs(N=120, D=6, C=3, seed=0):
    """Gaussian blobs: a small, learnable classification problem."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((C, D)) * 2
    y = rng.integers(0, C, N)
    X = centers[y] + rng.standard_normal((N, D))
    return {"X_train": X[:100], "y_train": y[:100], "X_val": X[100:], "y_val": y[100:]}


@pytest.mark.parametrize("rule", RULES)
def test_solver_lowers_the_loss(backend_name, rule):
    model = FullyConnectedNet([16], input_dim=6, num_classes=3, weight_scale=0.1, seed=0, backend=backend_name,
                              use_batchnorm=rule == "adam", dropout=0.1 if rule == "rmsprop" else 0)
    solver = Solver(model, _blobs(), update_rule=rule, optim_config={"learning_rate": SOLVER_LR[rule]},
                    batch_size=25, num_epochs=8, verbose=False, seed=0)
    solver.train()
    losses = solver.loss_history
    assert len(losses) == 32
    assert np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4]), losses
    assert solver.best_val_acc > 0.8
    for config in solver.optim_configs.values():
        for name in STATE[rule]:
            assert backends.name_of(config[name]) == backend_name


@pytest.mark.parametrize("rule", ["sgd_momentum", "adam"])
def test_optimizer_state_resumes_from_checkpoint(rule, tmp_path):
    def make():
        model = FullyConnectedNet([8], input_dim=6, num_classes=3, weight_scale=0.1, seed=1, dtype="float64",
                                  backend="numpy")
        return model, Solver(model, _blobs(), update_rule=rule, optim_config={"learning_rate": 1e-2},
                             lr_decay=0.9, batch_size=25, num_epochs=3, verbose=False, seed=1,
                             checkpoint_name=tmp_path / "run")

    full_model, full = make()
    states = []
    full.callback = lambda s, event: event == "epoch" and s.epoch == 1 and states.append(
        {p: {k: np.array(v, copy=True) for k, v in c.items()} for p, c in s.optim_configs.items()})
    full.train()
    first_epoch = states[0]

    # Resume a fresh solver from a checkpoint taken after epoch 1.
    _, one = make()
    one.num_iterations = one.iterations_per_epoch
    one.train()
    resumed_model, resumed = make()
    resumed.load_checkpoint(tmp_path / "run.npz")
    for p, config in first_epoch.items():
        for k, v in config.items():
            np.testing.assert_array_equal(np.asarray(resumed.optim_configs[p][k]), v, err_msg=f"{p}/{k}")
    resumed.train()
    for p in full.optim_configs:
        for k in STATE[rule]:
            np.testing.assert_allclose(resumed.optim_configs[p][k], full.optim_configs[p][k], rtol=1e-12)
    assert resumed.loss_history == pytest.approx(full.loss_history, rel=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_numpy_scalar_hyperparameters_keep_float32(xp, device, rule):
    # Under NumPy 2 promotion a np.float64 scalar would turn float32 arrays into float64.
    config = {k: np.float64(v) for k, v in DEFAULTS[rule].items()}
    w = xp.ones((3, 2), dtype=xp.float32, device=device)
    for _ in range(2):
        w, config = getattr(optim, rule)(w, xp.ones((3, 2), dtype=xp.float32, device=device), config)
        assert w.dtype == xp.float32
        assert all(config[name].dtype == xp.float32 for name in STATE[rule])
