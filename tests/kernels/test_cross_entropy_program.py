"""What the program of the Pallas loss's gradient holds (``_kernels._cross_entropy``): the
kernel's gradient used as is, with nothing multiplying ``[N, C]`` after it (internals:
compiled HLO and jaxprs)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softmax_jax as sj
from softmax_jax._kernels import _cross_entropy

pytestmark = pytest.mark.internals


def _mults_after_the_kernel(hlo: str, shape: str) -> list[str]:
  """``multiply`` instructions producing ``shape`` in the entry computation (directly or
  inside a fusion) that do not come from the kernel (interpret mode tags those
  ``xent_2d``)."""
  blocks = re.split(r"\n(?=\S)", hlo)
  comps = {m.group(1): b for b in blocks if (m := re.match(r"(?:ENTRY )?%(\S+)", b))}
  entry = next(b for b in blocks if b.startswith("ENTRY"))
  found = []
  for line in entry.splitlines():
    if f"= {shape}" not in line:
      continue
    bodies = [line]
    if called := re.search(r"calls=%([\w.\-]+)", line):
      bodies.append(comps[called.group(1)])
    found += [ins.strip() for body in bodies for ins in body.splitlines()
              if " multiply(" in ins and "xent_2d" not in ins]
  return found


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_grad_of_the_loss_is_the_kernel_output_in_the_optimised_program(rng, dtype):
  """Reads the compiled HLO: in the jitted ``jax.grad`` of the mean and the sum, nothing
  multiplies an ``[N, C]`` array after the kernel; a scaled loss does (the control that
  the check sees such a pass)."""
  x = jnp.asarray(rng.normal(size=(24, 40)), {"f32": jnp.float32, "bf16": jnp.bfloat16}[dtype])
  t = jnp.asarray(rng.integers(0, 40, 24))
  w = jnp.asarray(rng.random(40) + 0.5, jnp.float32)

  def hlo(f):
    return jax.jit(jax.grad(f)).lower(x).compile().as_text()

  for weights in (None, w):
    for reduction in ("mean", "sum"):
      text = hlo(lambda z, r=reduction, w=weights: _cross_entropy.cross_entropy(z, t, r,
                                                                                weights=w))
      assert _mults_after_the_kernel(text, f"{dtype}[24,40]") == [], reduction
  text = hlo(lambda z: 0.5 * _cross_entropy.cross_entropy(z, t, "mean"))
  assert _mults_after_the_kernel(text, f"{dtype}[24,40]") != []


def test_grad_of_the_mean_uses_the_kernel_gradient_as_is(rng, monkeypatch):
  """Reads the jaxpr and patches ``lax.cond``: in ``jax.grad`` of the mean, the gradient
  is the kernel's output, selected by a cond whose taken branch is empty."""
  from jax.extend.core import jaxprs_in_params
  x = jnp.asarray(rng.normal(size=(8, 64)), jnp.float32)
  t = jnp.asarray(rng.integers(0, 64, 8))
  jaxpr = jax.make_jaxpr(jax.grad(
      lambda z: sj.cross_entropy_with_integer_labels(z, t, impl="pallas")))(x)

  def conds(jp):
    for eqn in jp.eqns:
      if eqn.primitive.name == "cond" and "branches_platforms" not in eqn.params:
        yield eqn
      for sub in jaxprs_in_params(eqn.params):
        yield from conds(sub)

  found = [e for e in conds(jaxpr.jaxpr) if any(v.aval.shape == (8, 64) for v in e.outvars)]
  assert len(found) == 1
  false_branch, true_branch = found[0].params["branches"]
  assert true_branch.jaxpr.eqns == []  # the taken branch forwards the kernel's gradient
  assert any(e.primitive.name == "mul" for e in false_branch.jaxpr.eqns)
  taken = []
  cond = jax.lax.cond

  def spy(pred, *args, **kwargs):
    if not isinstance(pred, jax.core.Tracer):  # eager: the backward pass runs op by op
      taken.append(bool(pred))
    return cond(pred, *args, **kwargs)

  monkeypatch.setattr(_cross_entropy.lax, "cond", spy)  # the module reads lax.cond
  for w in (None, jnp.asarray(rng.random(64) + 0.5, jnp.float32)):
    g = jax.grad(lambda z, w=w: sj.cross_entropy_with_integer_labels(
        z, t, class_weights=w, impl="pallas"))(x)
    want = jax.grad(lambda z, w=w: sj.cross_entropy_with_integer_labels(
        z, t, class_weights=w, impl="xla"))(x)
    np.testing.assert_allclose(g, want, atol=1e-6)
  assert taken == [True] * 2
