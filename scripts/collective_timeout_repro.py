"""Reproduce XLA:CPU's abort when one virtual device reaches an all-reduce late (the test suite's rare worker abort).

    python scripts/collective_timeout_repro.py              # delay 70 s: default limit, then a 600 s one
    python scripts/collective_timeout_repro.py --delay 30   # under the default limit: both complete

Each case runs in a fresh process with 8 virtual CPU devices: a shard_map'd all-reduce whose device-0 input comes
from a host callback that sleeps `--delay` seconds, so the other 7 device threads wait at the rendezvous. With
XLA's default (a 20 s warning, then a 40 s termination timeout) the process aborts ("Termination timeout ...
exceeded", SIGABRT) once the wait passes ~60 s; with `--xla_cpu_collective_call_terminate_timeout_seconds=600`
it completes (the suite keeps XLA's limit: its aborts were a device thread that never arrived, tests/conftest.py).
Measured here (2-core VM, twice): delay 70 s → the default aborted after 64.7 and 67.3 s (exit -6), the longer
limit completed in 73.0 and 74.1 s with the right sum.
"""

import argparse
import os
import subprocess
import sys
import time

CHILD = """
import time, jax, jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P
try:
    from jax import shard_map
except ImportError:
    from jax.experimental.shard_map import shard_map
mesh = Mesh(jax.devices(), ("d",))
def late(x):
    if float(x[0]) == 0.0:
        time.sleep({delay})
    return x
def f(x):
    return jax.lax.psum(jax.pure_callback(late, jax.ShapeDtypeStruct(x.shape, x.dtype), x), "d")
print(float(jax.jit(shard_map(f, mesh=mesh, in_specs=P("d"), out_specs=P()))(jnp.arange(8.0))[0]))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=70.0)
    args = parser.parse_args()
    for name, flag in (("default", ""), ("a 600 s limit", "--xla_cpu_collective_call_terminate_timeout_seconds=600")):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
               "XLA_FLAGS": f"--xla_force_host_platform_device_count=8 {flag}"}
        t = time.time()
        out = subprocess.run([sys.executable, "-c", CHILD.format(delay=args.delay)], env=env, capture_output=True,
                             text=True)
        result = out.stdout.strip() or "no result"
        print(f"{name}: exit {out.returncode} after {time.time() - t:.1f} s, sum {result} (want 28.0)", flush=True)


if __name__ == "__main__":
    main()
