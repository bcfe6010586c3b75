"""The statistics of the reports, by hand (no scipy): Student's t quantiles, the mean with its 95% interval, and
the paired difference of two runs' per-example figures.

- Every mean of n ≥ 2 values has a 95% interval with Student's t (`mean_ci`; none below n = 2): for a 0/1
  part it is the Wald interval, too narrow near 0 and 1 (zero width at exactly 0 or 1) and not clipped to
  [0, 1]; at small sizes read it as a rough error bar.
- A paired difference (`paired_difference`) is the mean of the per-example differences B − A with the
  t interval of their sample variance.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence


def _incomplete_beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz's method)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # fmt: skip
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return result


def _regularised_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _incomplete_beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _incomplete_beta_fraction(b, a, 1.0 - x) / b


@functools.cache
def student_t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 1/2) of Student's t with `df` degrees of freedom, by bisection on its CDF:
    P(T ≤ t) = 1 − I_{df/(df + t²)}(df/2, 1/2) / 2 for t ≥ 0. (t_{0.975} is 12.706 at df 1, 4.303 at 2,
    2.571 at 5, 2.042 at 30, and tends to the normal's 1.960.)"""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"student_t_quantile needs 1/2 < p < 1 and df ≥ 1, not p={p}, df={df}")
    low, high = 0.0, 1e7
    for _ in range(200):
        mid = (low + high) / 2
        cdf = 1.0 - 0.5 * _regularised_incomplete_beta(df / (df + mid * mid), df / 2, 0.5)
        low, high = (mid, high) if cdf < p else (low, mid)
    return (low + high) / 2


def mean_ci(values: Iterable[float], level: float = 0.95) -> dict[str, float | int | None]:
    """The mean of `values` and its confidence interval at `level` (95%), with Student's t (n − 1 d.o.f.).

    Values that are all 0 or 1 (a rate p): the Wald interval p ± t·sqrt(p(1 − p)/n), whose variance
    p(1 − p) is the Bernoulli one (denominator n). Other values: mean ± t·s/sqrt(n), with s the sample
    standard deviation (denominator n − 1). t = t_{(1+level)/2, n−1}: 4.30 at n = 3, 2.06 at n = 25, 1.98 at
    n = 128 (the normal's 1.96 would make small samples look 24 % surer at n = 6). n < 2: the mean and no
    interval (low and high None); n = 0: no mean either. Not clipped to [0, 1]: an interval that leaves it
    says the sample is too small for the approximation.
    """
    values = [float(v) for v in values]
    return t_interval(values, level, wald=bool(values) and all(v in (0.0, 1.0) for v in values))


def t_interval(values: list[float], level: float, wald: bool) -> dict[str, float | int | None]:
    """mean ± t_{(1+level)/2, n−1} · sqrt(variance / n): the Bernoulli variance p(1 − p) if `wald`, else the
    sample variance (ddof = 1). n < 2: no interval; n = 0: no mean."""
    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = math.fsum(values) / n
    if n == 1:  # one value says nothing of its spread
        return {"mean": mean, "low": None, "high": None, "n": 1}
    variance = mean * (1 - mean) if wald else math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half_width = student_t_quantile((1 + level) / 2, n - 1) * math.sqrt(variance / n)
    return {"mean": mean, "low": mean - half_width, "high": mean + half_width, "n": n}


def paired_difference(
    a: Sequence[float], b: Sequence[float], level: float = 0.95
) -> dict[str, float | int | None]:
    """mean(B − A) over paired values and its confidence interval at `level` (95%), with Student's t.

    d_i = b_i − a_i;  mean(d) ± t_{(1+level)/2, n−1}·s_d/sqrt(n), s_d the sample standard deviation
    (denominator n − 1). n < 2: the mean and no interval (low and high None); n = 0: no mean either. Unlike
    `mean_ci`, never the Wald interval: differences of 0/1 parts take the values −1, 0 and 1.
    """
    differences = [float(y) - float(x) for x, y in zip(a, b, strict=True)]  # d_i = b_i − a_i
    return t_interval(differences, level, wald=False)
