"""A small learnable problem and Solver, shared by the tests of the Solver's update layouts (flat, blocks)."""

import numpy as np

from anynet import FullyConnectedNet, Solver


def blobs(seed=0, N=120, D=6, C=3):
    """Three Gaussian blobs, NumPy: 100 training and 20 validation points."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    X = rng.standard_normal((N, D)) + 3 * np.eye(C, D)[y]
    return {"X_train": X[:100], "y_train": y[:100], "X_val": X[100:], "y_val": y[100:]}


def small_solver(backend_name, rule, **kwargs):
    """A Solver of a small FC net with batchnorm and dropout (parameters of four shapes), float64, 3 epochs."""
    model = FullyConnectedNet([8, 5], input_dim=6, num_classes=3, weight_scale=0.3, seed=2, dtype="float64",
                              use_batchnorm=True, dropout=0.2, backend=backend_name)
    return Solver(model, blobs(), update_rule=rule, optim_config={"learning_rate": 1e-2}, lr_decay=0.8,
                  batch_size=20, num_epochs=3, verbose=False, seed=3, **kwargs)


def straight_and_resumed(make_solver, folder):
    """Two finished runs of ``make_solver(**kwargs)``: one straight through, one stopped after two epochs and
    resumed from its checkpoint by a new Solver."""
    straight = make_solver(checkpoint_name=folder / "straight")
    straight.train()
    part = make_solver(checkpoint_name=folder / "part")
    part.num_iterations = 2 * part.iterations_per_epoch
    part.train()
    resumed = make_solver()
    resumed.load_checkpoint(folder / "part.npz")
    resumed.train()
    return straight, resumed


def halve_lr_and_zero_m_at_7(solver, event):
    """Callback: at step 7, mid-epoch (5 steps an epoch), read and change every parameter's Adam config."""
    if event == "iteration" and solver.t == 7:
        for config in solver.optim_configs.values():
            config["learning_rate"] *= 0.5
            config["m"] = config["m"] * 0.0


def reorder_params_at_7(solver, event):
    """Callback: at step 7, mid-epoch, new parameter arrays in the reverse order."""
    if event == "iteration" and solver.t == 7:
        solver.model.params = {k: np.array(v, copy=True) for k, v in reversed(solver.model.params.items())}
