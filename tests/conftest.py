"""Shared test set-up: 8 virtual CPU devices (for sharding tests) and fp32 matmuls everywhere."""

import os
import time

# XLA:CPU compiles the suite's programs with LLVM's optimisations off: the tests' models are tiny, so compiling
# is most of their time (the suite ran in 973 s against 1107 s with the default level 3; level 1 was no faster
# than 0). The same operations are computed (HLO fusion still runs; tests compare against tolerances or against
# the same program). Subprocesses that set their own XLA_FLAGS (test_multiprocess, test_notebook) add these
# too. Benchmarks never run with them.
#
# XLA:CPU aborts a process ("Termination timeout for `all reduce ...` exceeded", then "Fatal Python error: Aborted")
# when a virtual device's thread has not reached a collective ~60 s after the others; this is the suite's rare worker
# abort (scripts/collective_timeout_repro.py reproduces the abort). Seen under heavy load on the 8-device mesh, the
# missing thread never arrived (gdb: 7 of 8 waiting; a 10-minute limit only turned the abort into a hang), so the
# limit stays XLA's and the runs that trained fixtures do go on one device (`train_lab`).
TEST_XLA_OPTIONS = "--xla_backend_optimization_level=0"

# Must happen before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {TEST_XLA_OPTIONS}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# XLA's errors and fatal messages only: scripts/test.sh leaves C++ output uncaptured (so a worker that XLA aborts
# leaves its reason in the log), and its warnings (e.g. the SPMD partitioner's) would bury the report.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One persistent compilation cache for the session, shared with subprocesses (the notebook's kernel, CLI
# subprocesses): tests that build the same computation again (each recipe's smoke run, jit caches cleared
# between modules) load it instead of recompiling.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    _OWN_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="rlhfjax-test-xla-cache-")
    # Only programs that took a while to compile: every cache hit is an executable deserialised and linked
    # again, and a worker aborted in a tiny op (`1.0 - mean`, test_experiments.py's SuperHF smoke run) even with
    # a cache per worker; such ops recompile in milliseconds, so caching them bought nothing.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.25")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    os.environ["RLHFJAX_TEST_OWN_CACHE"] = _OWN_CACHE
elif os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("RLHFJAX_TEST_OWN_CACHE") == os.environ[
        "JAX_COMPILATION_CACHE_DIR"]:
    # A cache directory per worker (its subprocesses share it): jax writes entries in place, and a worker
    # reading an entry another process is writing got a truncated one; a worker aborted mid-compile twice in
    # the same test (test_experiments.py's SuperHF smoke run), suspected to be this race.
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.environ["RLHFJAX_TEST_OWN_CACHE"],
                                                           os.environ["PYTEST_XDIST_WORKER"])

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402

TRAINED_SFT_STEPS, TRAINED_RM_STEPS = 300, 150


def train_lab(root, toylab_dir):
    """A briefly trained SFT policy and reward model on the toy lab at `toylab_dir`: {data, sft, rm} paths. The
    online methods' learning tests (PPO, SuperHF, best-of-n, RLOO, GRPO, DPO) all start from these."""
    from rlhfjax import parallel
    from rlhfjax.config import load_config
    from rlhfjax.recipes import rm, sft

    exp = os.path.join(os.path.dirname(__file__), "..", "experiments")
    lab = f"--config.data.toylab_dir={toylab_dir}"
    off = ["--config.train.eval_every=0", "--config.train.save_every=0"]
    sft.run(load_config(os.path.join(exp, "toylab_sft.py"), [lab, f"--config.train.steps={TRAINED_SFT_STEPS}", *off]),
            str(root / "sft"), parallel.single_device_mesh())
    rm.run(load_config(os.path.join(exp, "toylab_rm.py"), [
        lab, f"--config.train.steps={TRAINED_RM_STEPS}", *off, f"--config.model.init_from={root / 'sft' / 'model'}"]),
        str(root / "rm"), parallel.single_device_mesh())
    return lab_paths(root, toylab_dir)


def lab_paths(root, toylab_dir):
    return {"data": toylab_dir, "sft": root / "sft" / "model", "rm": root / "rm" / "model"}


def _run_wide(tmp_path_factory, name: str):
    """A folder of this test run that every pytest-xdist worker sees (the run's shared temporary directory)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name


@pytest.fixture(scope="session")
def shared_toylab(tmp_path_factory):
    """One toy lab (seed 0) for the whole run, built by the first worker that needs it while the others wait
    (tests only read it; the few that test building a lab on first use make their own)."""
    from filelock import FileLock

    from rlhfjax.data.sources import ensure_toylab

    root = _run_wide(tmp_path_factory, "toylab")
    with FileLock(str(root) + ".lock"):
        ensure_toylab(str(root), 0)
    return root


@pytest.fixture(scope="module")
def toylab_data(shared_toylab):
    """The run's toy lab, as a `data.toylab_dir` string."""
    return str(shared_toylab)


@pytest.fixture(scope="session")
def trained_lab(tmp_path_factory, shared_toylab):
    """Built once per test run on the shared toy lab: with pytest-xdist, the first worker that needs it builds
    it in the run's shared temporary directory while the others wait for it."""
    from filelock import FileLock

    root = _run_wide(tmp_path_factory, "trained_lab")
    with FileLock(str(root) + ".lock"):
        if not (root / "built").exists():
            root.mkdir(parents=True, exist_ok=True)
            train_lab(root, shared_toylab)
            (root / "built").write_text("")
    return lab_paths(root, shared_toylab)


def pytest_collection_modifyitems(config, items):
    """Files holding a test marked `slow` run first (in file order), so that with pytest-xdist
    (scripts/test.sh runs two workers) the longest tests are not the last ones to start."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: the order within each group is kept


@pytest.fixture(autouse=True, scope="module")
def _data_parallel_runs_on_one_device(request):
    """A run that asks for the default data-parallel mesh (`parallel.make_mesh` with strategy "dp" and no devices
    given: every recipe run without a mesh, every CLI run in this process) gets one device, unless its module sets
    `EVERY_DEVICE = True`. The 8-device CPU mesh costs each step a collective over 8 threads on this 2-core machine
    (and compiles slower); sharding is what test_parallel, test_offline_mesh, test_multiprocess and the fsdp
    parity tests check, on meshes they ask for by strategy, which stay on all 8 devices. One device here also
    keeps most of the suite clear of the 8-thread collectives behind its rare abort (see TEST_XLA_OPTIONS)."""
    from rlhfjax import parallel

    if getattr(request.module, "EVERY_DEVICE", False):
        yield
        return
    make_mesh = parallel.make_mesh

    def first_device_when_data_parallel(config=None, devices=None):
        if devices is None and (config is None or config.strategy == "dp"):
            devices = jax.devices()[:1]
        return make_mesh(config, devices)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parallel, "make_mesh", first_device_when_data_parallel)
        yield


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_code():
    """Drop jit caches after each test module: one process compiles thousands of XLA executables over the
    suite, and keeping them all grows memory (and mapped code regions) until the process aborts."""
    yield
    jax.clear_caches()


def _mapped_regions():
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux
        return None


def _map_limit():
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65530  # Linux's default


_MAP_LIMIT = _map_limit()


@pytest.fixture(autouse=True)
def _bounded_code_regions(request):
    """XLA:CPU maps each compiled executable's code into regions of its own, and a process that reaches
    vm.max_map_count (65,530 by default) aborts. One module (test_experiments.py, every recipe's smoke run)
    reached 24k regions, so the jit caches are cleared inside a module too, once a fifth of the limit is mapped.
    RLHFJAX_TEST_RESOURCE_LOG=<file> appends each test's regions, resident memory and time to <file>."""
    start = time.perf_counter()
    yield
    regions = _mapped_regions()
    if regions is not None and regions > 0.2 * _MAP_LIMIT:
        jax.clear_caches()
    log = os.environ.get("RLHFJAX_TEST_RESOURCE_LOG")
    if log:
        import resource

        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        with open(log, "a") as f:
            f.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}\t{request.node.nodeid}\tregions={regions}"
                    f"\tpeak_rss_mb={peak_mb}\tseconds={time.perf_counter() - start:.1f}\n")


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:  # the session's cache only; one given from outside is the caller's to keep
        import shutil

        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
