"""Layer 4: operations written once over the backend primitives.

Modules, in dependency order (details, costs, accuracy and leakage in
``docs/ops-library.md``):

* :mod:`~concilium.ops.bitwise`: local bit permutations of 64-bit words;
* :mod:`~concilium.ops.summands`: an arithmetic sharing as two boolean summands
  (carry-save reduction of ``n`` summands);
* :mod:`~concilium.ops.conversion`: A2B (sign bit, bit decomposition), zero
  test, B2A;
* :mod:`~concilium.ops.compare`: ``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``,
  ``between``;
* :mod:`~concilium.ops.select`: ``where``, ``abs``, ``sign``, ``relu``,
  min/max/argmin/argmax;
* :mod:`~concilium.ops.fixed_point`: division, reciprocal, square roots;
* :mod:`~concilium.ops.elementary`: ``exp``, ``log``, ``sigmoid``;
* :mod:`~concilium.ops.sort`: shuffle, stable sort, rank, segmented sums;
* :mod:`~concilium.ops.accuracy`: the documented error bounds.

Imports only :mod:`concilium.ring`, :mod:`concilium.net` and :mod:`concilium.mpc`.
"""

__all__: list[str] = []
