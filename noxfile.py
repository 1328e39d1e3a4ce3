"""nox sessions: the test suite once per backend, lint, and benchmarks."""

import shutil

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

BACKENDS = ["numpy", "array_api_strict", "torch", "jax", "cupy"]


@nox.session
@nox.parametrize("backend", BACKENDS)
def tests(session, backend):
    """Run the tests on one backend (numpy also runs the backend-independent tests)."""
    if backend == "cupy" and shutil.which("nvidia-smi") is None:
        session.skip("cupy needs an NVIDIA GPU and driver; none is visible here")
    # --no-compile: pip's byte-compiling of every module of torch and jax took longer than installing them;
    # the modules a test imports are compiled when first imported.
    session.install("--no-compile", "-e", ".[test]", "-r", f"backends/{backend}.txt")
    # The compiling backends' tests wait on compilers: JAX compiles each operation's first call at every new shape
    # and torch.compile each step, mostly one core at a time. Spread over the cores (pytest-xdist), the jax
    # session took 1.4x and the torch session 1.17x less time on two; numpy's tests gain nothing.
    spread = ["-n", "auto"] if backend in ("jax", "torch") else []
    env = {"ANYNET_TEST_BACKENDS": backend}
    if backend == "jax":
        # XLA's own optimization of the thousands of one-operation programs eager JAX compiles: 16% of the
        # session's time, for code the tests time nowhere.
        env["XLA_FLAGS"] = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    if backend == "torch":
        # A cold Inductor build of a step is 15-35 s of C++ compilation here: the tests trace steps through
        # dynamo and AOT autograd only, but for those that check Inductor's code (test_compile, float32).
        env["ANYNET_TORCH_COMPILE_BACKEND"] = "aot_eager"
    session.run("pytest", *spread, *session.posargs, env=env)


@nox.session
def lint(session):
    """ruff over the package, tests and benchmarks; import-linter's contracts over the package's layers."""
    session.install("--no-compile", "ruff>=0.6", "import-linter>=2.1")
    session.install("--no-compile", "--no-deps", "-e", ".")  # found by import-linter; never imported
    session.run("ruff", "check", "anynet", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("lint-imports")


@nox.session
def bench(session):
    """asv's quick run of the training benchmarks on this machine's interpreter: numpy, torch and jax on the CPU."""
    session.install("--no-compile", "-e", ".[bench]", "-r", "backends/torch.txt", "-r", "backends/jax.txt")
    session.run("asv", "machine", "--yes")
    session.run("asv", "run", "--python=same", "--quick", "--show-stderr", *session.posargs)
