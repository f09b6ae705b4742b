"""Compiled temporary memory of the chunked linear cross-entropy against the materialised one.

    python experiments/linear_memory.py     # compiles only (no arrays are allocated)

For each shape (tokens × hidden × vocabulary) both value-and-gradient programs
(with respect to the hidden states and the weight) are compiled for the
current backend, and `memory_analysis().temp_size_in_bytes` is read: memory
beyond the inputs and the outputs (loss and the two gradients).  Writes
docs/linear_memory.json and prints a markdown table.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp

import softmax_jax as sj

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
SHAPES = [  # (tokens, hidden, vocabulary, dtype)
    (2048, 256, 32768, "float32"),  # the CPU target of the large-scale issue
    (8192, 4096, 131072, "bfloat16"),  # the H100 reference measurement
    (8192, 2304, 256000, "bfloat16"),  # the shape of Apple's Cut Cross-Entropy paper
    (8192, 4096, 131072, "float32"),  # the same two in float32: the CPU backend has no
    (8192, 2304, 256000, "float32"),  # bfloat16 matmul and hoists a float32 copy of W
]


def temp_bytes(fn, *shapes) -> int:
  return jax.jit(fn).lower(*shapes).compile().memory_analysis().temp_size_in_bytes


def main():
  rows = []
  for n, h, v, dtype in SHAPES:
    dt = jnp.dtype(dtype)
    args = (jax.ShapeDtypeStruct((n, h), dt), jax.ShapeDtypeStruct((h, v), dt),
            jax.ShapeDtypeStruct((n,), jnp.int32))
    chunked = jax.value_and_grad(lambda x, w, t: sj.linear_cross_entropy(x, w, t), (0, 1))
    materialised = jax.value_and_grad(
        lambda x, w, t: sj.cross_entropy_with_integer_labels(x @ w, t), (0, 1))
    a, b = temp_bytes(chunked, *args), temp_bytes(materialised, *args)
    rows.append({"tokens": n, "hidden": h, "vocab": v, "dtype": dtype, "chunked_bytes": a,
                 "materialised_bytes": b, "ratio": a / b, "backend": jax.default_backend()})
    print(rows[-1], flush=True)
  (DOCS / "linear_memory.json").write_text(json.dumps(rows, indent=1))
  print("| tokens × hidden × vocab | dtype | chunked temp | materialised temp | ratio |")
  print("|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['tokens']} × {r['hidden']} × {r['vocab']} | {r['dtype']} | "
          f"{r['chunked_bytes'] / 1e6:,.1f} MB | {r['materialised_bytes'] / 1e6:,.1f} MB | "
          f"{r['ratio']:.1%} |")


if __name__ == "__main__":
  main()
