"""The soft term's divergences D(p, q): per-position terms and the gradient with respect to the student's logits.

p = softmax(teacher / T), q = softmax(student / T). Each entry gives, on rows of log p and log q:
- terms (N, V): the summands whose row sums are D(p, q) (differentiable: the unfused path's autograd);
- student_gradient (N, V): dD/ds with s = student / T, formed directly (the fused path's gradient).
The formulas are in docs/LOSSES.md.
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
    """One divergence: its terms and its student gradient, both f(log_p, p, log_q, parameter) -> (N, V)."""

    name: str
    terms: Callable
    student_gradient: Callable  # may overwrite log_q (its last use)
    parameter: str | None = None  # the DistillationLoss keyword of its parameter (jsd_beta, skew_lambda)


def _through_softmax(q: torch.Tensor, dq: torch.Tensor) -> torch.Tensor:
    """dD/ds from dD/dq for q = softmax(s): q * (dq - <q, dq>), in place on dq; rows (N, V)."""
    return dq.sub_((q * dq).sum(dim=-1, keepdim=True)).mul_(q)


def _mixture_log(log_a: torch.Tensor, log_b: torch.Tensor, weight: float) -> torch.Tensor:
    """log(weight * a + (1 - weight) * b) from log a and log b, (N, V)."""
    return torch.logaddexp(log_a + math.log(weight), log_b + math.log1p(-weight))


def _forward_kl_terms(log_p, p, log_q, _):
    return p * (log_p - log_q)  # KL(p || q)


def _forward_kl_gradient(log_p, p, log_q, _):
    return log_q.exp_().sub_(p)  # q - p


def _reverse_kl_terms(log_p, p, log_q, _):
    return log_q.exp() * (log_q - log_p)  # KL(q || p)


def _reverse_kl_gradient(log_p, p, log_q, _):
    q = log_q.exp()
    return _through_softmax(q, log_q.sub_(log_p))  # dD/dq = log q - log p (+ 1, which cancels)


def _jsd_terms(log_p, p, log_q, beta):
    log_m = _mixture_log(log_p, log_q, beta)  # m = beta p + (1 - beta) q
    return beta * p * (log_p - log_m) + (1.0 - beta) * log_q.exp() * (log_q - log_m)


def _jsd_gradient(log_p, p, log_q, beta):
    log_m = _mixture_log(log_p, log_q, beta)
    q = log_q.exp()
    return _through_softmax(q, log_q.sub_(log_m).mul_(1.0 - beta))  # dD/dq = (1 - beta) (log q - log m)


def _skew_kl_terms(log_p, p, log_q, skew):
    return p * (log_p - _mixture_log(log_p, log_q, skew))  # KL(p || skew p + (1 - skew) q)


def _skew_kl_gradient(log_p, p, log_q, skew):
    log_r = _mixture_log(log_p, log_q, skew)
    q = log_q.exp()
    return _through_softmax(q, log_r.neg_().add_(log_p).exp_().mul_(skew - 1.0))  # dD/dq = -(1 - skew) p / r


def _skew_reverse_kl_terms(log_p, p, log_q, skew):
    return log_q.exp() * (log_q - _mixture_log(log_q, log_p, skew))  # KL(q || skew q + (1 - skew) p)


def _skew_reverse_kl_gradient(log_p, p, log_q, skew):
    log_r = _mixture_log(log_q, log_p, skew)
    q = log_q.exp()
    ratio = (log_q - log_r).exp_().mul_(skew)  # skew q / r
    return _through_softmax(q, log_q.sub_(log_r).sub_(ratio))  # dD/dq = log q - log r - skew q / r (+ 1)


def _tvd_terms(log_p, p, log_q, _):
    return 0.5 * (p - log_q.exp()).abs()  # 0.5 |p - q|


def _tvd_gradient(log_p, p, log_q, _):
    q = log_q.exp()
    return _through_softmax(q, torch.sign(q - p).mul_(0.5))  # dD/dq = 0.5 sign(q - p); 0 where equal


DIVERGENCES = {entry.name: entry for entry in (
    Divergence("forward_kl", _forward_kl_terms, _forward_kl_gradient),
    Divergence("reverse_kl", _reverse_kl_terms, _reverse_kl_gradient),
    Divergence("jsd", _jsd_terms, _jsd_gradient, "jsd_beta"),
    Divergence("skew_kl", _skew_kl_terms, _skew_kl_gradient, "skew_lambda"),
    Divergence("skew_reverse_kl", _skew_reverse_kl_terms, _skew_reverse_kl_gradient, "skew_lambda"),
    Divergence("tvd", _tvd_terms, _tvd_gradient),
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
