"""Every equation of a jaxpr, those of nested jaxprs (jit, custom_vjp, cond, remat) included."""


def eqns(jaxpr):
  """Yields each equation, then the equations of the jaxprs in its params (pre-order)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for v in eqn.params.values():
      for j in (v if isinstance(v, (tuple, list)) else (v,)):
        inner = getattr(j, 'jaxpr', j)
        if hasattr(inner, 'eqns'):
          yield from eqns(inner)
