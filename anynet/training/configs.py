"""``Solver.optim_configs``: the course's per-parameter config dicts, as a view of the optimizer's state.

The course's Solver keeps one dict per parameter (learning rate, momentum,
velocity, ...) and its users read and change them between steps: a decay
written by hand, a velocity inspected. Here the state lives in the
optimizer's own layout (``anynet.training.optimizer``); these mappings read
it in the course's form and write through to it. A learning rate written
for a parameter with a call of its own only changes that rate; any other
write lays the state out anew from the course's form (rare: never in the
training loop).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping


class ConfigsView(Mapping):
    """Parameter name -> ``ParamConfig``: the state of one Solver, in the course's form."""

    def __init__(self, solver):
        self._solver = solver

    def __getitem__(self, name):
        self._solver.optimizer.plan.group_of(name)  # KeyError for a parameter the optimizer does not know
        return ParamConfig(self._solver, name)

    def __iter__(self):
        return (name for group in self._solver.optimizer.plan.groups for name in group.names)

    def __len__(self):
        return sum(len(group.names) for group in self._solver.optimizer.plan.groups)

    def __setitem__(self, name, config):
        """Replace parameter ``name``'s whole config (hyperparameters and state)."""
        configs = self._solver.optimizer.configs(self._solver._optim_state)
        if name not in configs:
            raise KeyError(name)
        configs[name] = dict(config)
        self._solver.optim_configs = configs

    def __repr__(self):
        return repr({name: dict(config) for name, config in self.items()})


class ParamConfig(MutableMapping):
    """One parameter's config: reads and writes the optimizer's state."""

    def __init__(self, solver, name):
        self._solver, self._name = solver, name

    def _config(self):
        optimizer = self._solver.optimizer
        i, group = optimizer.plan.group_of(self._name)
        return optimizer.config_of(self._name, group, self._solver._optim_state[i])

    def __getitem__(self, key):
        return self._config()[key]

    def __iter__(self):
        return iter(self._config())

    def __len__(self):
        return len(self._config())

    def __setitem__(self, key, value):
        solver, optimizer = self._solver, self._solver.optimizer
        if key == "learning_rate":
            state = optimizer.set_rate(solver._optim_state, self._name, value)
            if state is not None:
                solver._optim_state = state
                return
        configs = optimizer.configs(solver._optim_state)
        configs[self._name][key] = value
        solver.optim_configs = configs

    def __delitem__(self, key):
        configs = self._solver.optimizer.configs(self._solver._optim_state)
        del configs[self._name][key]
        self._solver.optim_configs = configs

    def __repr__(self):
        return repr(self._config())
