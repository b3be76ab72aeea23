"""The soft term's divergences D(p, q): per-position terms and the gradient with respect to the student's logits.

p = softmax(teacher / T), q = softmax(student / T). Each entry evaluates, on rows of log p and log q,
the terms whose row sums are D(p, q) and, for the fused path, dD/ds (s = student / T) with the
intermediates shared. The formulas are in docs/LOSSES.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

DEFAULT_DIVERGENCE = "forward_kl"
DEFAULT_JSD_BETA = 0.5
DEFAULT_SKEW_LAMBDA = 0.1


@dataclass(frozen=True)
class Divergence:
    """One divergence: evaluate(log_p, p, log_q, parameter, gradient) -> (terms (N, V), dD/ds (N, V) or None).

    terms are the summands whose row sums are D(p, q), differentiable (the unfused path's autograd);
    with gradient=True the second value is dD/ds for s = student / T, formed directly (the fused path),
    and log_q may be overwritten (its last use).
    """

    name: str
    evaluate: Callable
    parameter: str | None = None  # the DistillationLoss keyword of its parameter (jsd_beta, skew_lambda)


def _through_softmax(q: torch.Tensor, dq: torch.Tensor) -> torch.Tensor:
    """dD/ds from dD/dq for q = softmax(s): q * (dq - <q, dq>), in place on dq; rows (N, V)."""
    return dq.sub_((q * dq).sum(dim=-1, keepdim=True)).mul_(q)


def _mixture_log(log_a: torch.Tensor, log_b: torch.Tensor, weight: float) -> torch.Tensor:
    """log(weight * a + (1 - weight) * b) from log a and log b, (N, V)."""
    return torch.logaddexp(log_a + math.log(weight), log_b + math.log1p(-weight))


def _forward_kl(log_p, p, log_q, _, gradient):
    terms = p * (log_p - log_q)  # KL(p || q)
    return terms, log_q.exp_().sub_(p) if gradient else None  # q - p


def _reverse_kl(log_p, p, log_q, _, gradient):
    q = log_q.exp()
    terms = q * (log_q - log_p)  # KL(q || p)
    return terms, _through_softmax(q, log_q.sub_(log_p)) if gradient else None  # dD/dq = log q - log p (+ 1)


def _jsd(log_p, p, log_q, beta, gradient):
    log_m = _mixture_log(log_p, log_q, beta)  # m = beta p + (1 - beta) q
    q = log_q.exp()
    terms = beta * p * (log_p - log_m) + (1.0 - beta) * q * (log_q - log_m)
    if not gradient:
        return terms, None
    return terms, _through_softmax(q, log_q.sub_(log_m).mul_(1.0 - beta))  # dD/dq = (1 - beta) (log q - log m)


def _skew_kl(log_p, p, log_q, skew, gradient):
    log_r = _mixture_log(log_p, log_q, skew)  # r = skew p + (1 - skew) q
    terms = p * (log_p - log_r)  # KL(p || r)
    if not gradient:
        return terms, None
    q = log_q.exp()
    return terms, _through_softmax(q, log_r.neg_().add_(log_p).exp_().mul_(skew - 1.0))  # dD/dq = -(1 - skew) p / r


def _skew_reverse_kl(log_p, p, log_q, skew, gradient):
    log_r = _mixture_log(log_q, log_p, skew)  # r = skew q + (1 - skew) p
    q = log_q.exp()
    log_ratio = log_q - log_r
    terms = q * log_ratio  # KL(q || r)
    if not gradient:
        return terms, None
    ratio = log_ratio.exp().mul_(skew)  # skew q / r
    return terms, _through_softmax(q, log_ratio.sub_(ratio))  # dD/dq = log q - log r - skew q / r (+ 1)


def _tvd(log_p, p, log_q, _, gradient):
    q = log_q.exp()
    difference = q - p
    terms = 0.5 * difference.abs()  # 0.5 |p - q|
    return terms, _through_softmax(q, difference.sign_().mul_(0.5)) if gradient else None  # 0.5 sign(q - p)


DIVERGENCES = {entry.name: entry for entry in (
    Divergence("forward_kl", _forward_kl),
    Divergence("reverse_kl", _reverse_kl),
    Divergence("jsd", _jsd, "jsd_beta"),
    Divergence("skew_kl", _skew_kl, "skew_lambda"),
    Divergence("skew_reverse_kl", _skew_reverse_kl, "skew_lambda"),
    Divergence("tvd", _tvd),
)}
CHOICES = tuple(DIVERGENCES)


def divergence_parameter(name: str, jsd_beta: float, skew_lambda: float) -> float:
    """The one parameter the divergence `name` reads (0.0 for those without), validated: 0 < value < 1."""
    if name not in DIVERGENCES:
        raise ValueError(f"unknown divergence {name!r}; choose one of {', '.join(CHOICES)}")
    for keyword, value in (("jsd_beta", jsd_beta), ("skew_lambda", skew_lambda)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{keyword} must be between 0 and 1 (exclusive), got {value}")
    return {"jsd_beta": jsd_beta, "skew_lambda": skew_lambda}.get(DIVERGENCES[name].parameter, 0.0)
