"""Logits donation in the fused cross-entropy kernel: compiled memory and time.

Compiles ``value_and_grad`` of ``cross_entropy_with_integer_labels(hidden @ W, labels,
impl="pallas")`` with ``donate_logits`` off and on, and prints one JSON line per case
with the compiled temporary memory and the median time.  With donation the gradient
takes the logits' buffer, so the temporary memory should drop by one ``[N, C]`` array.
On the CPU the kernel runs in interpret mode, which lowers it to XLA loops with buffers
of their own, so the saving shows only on a GPU.

  python experiments/donation_check.py --shape 8192x1024x32768 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import softmax_jax as sj


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--shape", default="8192x1024x32768", help="tokens x hidden x classes")
  ap.add_argument("--dtype", default="bfloat16")
  ap.add_argument("--repeats", type=int, default=10)
  args = ap.parse_args(argv)
  n, d, c = (int(v) for v in args.shape.split("x"))
  dtype = jnp.dtype(args.dtype)
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  h = (jax.random.normal(k1, (n, d)) / np.sqrt(d)).astype(dtype)
  w = jax.random.normal(k2, (d, c)).astype(dtype)
  t = jax.random.randint(k3, (n,), 0, c)
  results = {}
  for donate in (False, True):
    def loss(h, w, donate=donate):
      return sj.cross_entropy_with_integer_labels(h @ w, t, impl="pallas",
                                                  donate_logits=donate)
    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    compiled = f.lower(h, w).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    out = jax.block_until_ready(compiled(h, w))
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      jax.block_until_ready(compiled(h, w))
      times.append(time.perf_counter() - start)
    results[donate] = out
    print(json.dumps({"donate_logits": donate, "shape": args.shape, "dtype": args.dtype,
                      "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
                      "temp_bytes": int(temp), "logits_bytes": n * c * dtype.itemsize,
                      "median_ms": 1e3 * float(np.median(times))}))
  same = all(bool(jnp.array_equal(a, b)) for a, b in
             zip(jax.tree.leaves(results[False]), jax.tree.leaves(results[True]), strict=True))
  print(json.dumps({"identical_results": same}))
  return 0 if same else 1


if __name__ == "__main__":
  raise SystemExit(main())
