"""Value a European call option by Monte Carlo, one function invocation per chunk of draws.

The risk-management case from the seed talk: a Monte Carlo valuation is embarrassingly parallel,
so 100,000,000 draws are split into chunks (100 chunks of 1,000,000 by default) and every chunk
runs as its own function invocation through :class:`dask_faas.FaasExecutor`. Each invocation
simulates the terminal stock price under geometric Brownian motion,

    S_T = S0 * exp((r - sigma**2 / 2) * T + sigma * sqrt(T) * Z),    Z ~ N(0, 1),

with its own independent random stream (``numpy.random.SeedSequence(seed).spawn(chunks)``), and
returns only three numbers: its number of draws, the sum of the call's payoffs ``max(S_T - K, 0)``
and the sum of their squares. The client combines them into the discounted price and its standard
error and compares it with the Black-Scholes closed form.

Run it (the embedded default: a warm pool of local function processes and local storage)::

    python examples/monte_carlo.py
    python examples/monte_carlo.py --draws 10_000_000 --chunks 200 --workers 2 --progress
    python examples/monte_carlo.py --S0 100 --K 95 --sigma 0.3 --T 0.5

The exit code is 1 when the estimate lies more than 3 standard errors from Black-Scholes (a
correct run fails this way about 0.3% of the time for a given seed), so the script doubles as a
smoke test.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

try:
    import numpy as np
except ImportError:  # numpy is not a dependency of dask-faas itself
    raise SystemExit("examples/monte_carlo.py needs numpy: pip install numpy") from None

from dask_faas import FaasExecutor

#: Draws generated and reduced at once inside a function: bounds its memory (8 bytes per draw).
BLOCK = 1_000_000
#: Distance to the closed form, in standard errors, beyond which the run counts as failed.
TOLERANCE_SE = 3.0


@dataclass(frozen=True)
class Option:
    """A European call on a stock following geometric Brownian motion."""

    S0: float  # spot price
    K: float  # strike
    r: float  # continuously compounded risk-free rate
    sigma: float  # volatility
    T: float  # maturity in years

    @property
    def discount(self) -> float:
        return math.exp(-self.r * self.T)


@dataclass(frozen=True)
class Estimate:
    """The Monte Carlo price of an option and its standard error."""

    price: float
    stderr: float
    draws: int


def black_scholes_call(option: Option) -> float:
    """Closed-form Black-Scholes price of a European call."""

    def normal_cdf(x: float) -> float:
        return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))

    vol = option.sigma * math.sqrt(option.T)
    d1 = (math.log(option.S0 / option.K) + (option.r + option.sigma**2 / 2) * option.T) / vol
    d2 = d1 - vol
    return option.S0 * normal_cdf(d1) - option.K * option.discount * normal_cdf(d2)


def simulate_chunk(
    draws: int, seed: np.random.SeedSequence, option: Option, block: int = BLOCK
) -> tuple[int, float, float]:
    """Runs inside one invocation: ``(draws, sum of payoffs, sum of squared payoffs)``.

    The payoffs are undiscounted; the draws are made ``block`` at a time, in place, so the memory
    used stays near ``8 * block`` bytes whatever the chunk size.
    """
    rng = np.random.default_rng(seed)
    drift = (option.r - option.sigma**2 / 2) * option.T
    vol = option.sigma * math.sqrt(option.T)
    buffer = np.empty(min(block, draws), dtype=np.float64)
    total = total_sq = 0.0
    done = 0
    while done < draws:
        n = min(block, draws - done)
        payoff = buffer[:n]
        rng.standard_normal(out=payoff)
        payoff *= vol
        payoff += drift
        np.exp(payoff, out=payoff)
        payoff *= option.S0
        payoff -= option.K
        np.maximum(payoff, 0.0, out=payoff)
        total += float(payoff.sum())
        total_sq += float(np.dot(payoff, payoff))
        done += n
    return draws, total, total_sq


def combine(partials: list[tuple[int, float, float]], option: Option) -> Estimate:
    """Discounted price and standard error from the chunks' sums."""
    n = sum(p[0] for p in partials)
    mean = math.fsum(p[1] for p in partials) / n
    mean_sq = math.fsum(p[2] for p in partials) / n
    variance = max(mean_sq - mean * mean, 0.0) * n / (n - 1)
    df = option.discount
    return Estimate(price=df * mean, stderr=df * math.sqrt(variance / n), draws=n)


def split(draws: int, chunks: int) -> list[int]:
    """``draws`` split into ``chunks`` sizes that differ by at most one."""
    size, extra = divmod(draws, chunks)
    return [size + (i < extra) for i in range(chunks)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Monte Carlo price of a European call, one FaaS invocation per chunk.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--draws", type=int, default=100_000_000, help="total number of draws")
    parser.add_argument("--chunks", type=int, default=100, help="invocations the draws are split into")
    parser.add_argument("--workers", type=int, default=None, help="local pool size (default: the CPU count)")
    parser.add_argument("--seed", type=int, default=2017, help="root seed of the random streams")
    parser.add_argument("--S0", type=float, default=100.0, help="spot price")
    parser.add_argument("--K", type=float, default=105.0, help="strike")
    parser.add_argument("--r", type=float, default=0.05, help="risk-free rate")
    parser.add_argument("--sigma", type=float, default=0.2, help="volatility")
    parser.add_argument("--T", type=float, default=1.0, help="maturity in years")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args(argv)
    if args.chunks < 1 or args.draws < 2 * args.chunks:
        parser.error("need --chunks >= 1 and at least 2 draws per chunk")
    if min(args.S0, args.K, args.sigma, args.T) <= 0:
        parser.error("S0, K, sigma and T must be positive")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    option = Option(S0=args.S0, K=args.K, r=args.r, sigma=args.sigma, T=args.T)
    sizes = split(args.draws, args.chunks)
    seeds = np.random.SeedSequence(args.seed).spawn(args.chunks)
    settings = {} if args.workers is None else {"workers": args.workers}

    started = time.perf_counter()
    with FaasExecutor(**settings) as ex:
        partials = list(ex.map(simulate_chunk, sizes, seeds, [option] * args.chunks, progress=args.progress))
        invocations = ex.stats["invocations"]
        workers = ex.session.num_workers
    wall = time.perf_counter() - started

    estimate = combine(partials, option)
    reference = black_scholes_call(option)
    distance = (estimate.price - reference) / estimate.stderr
    ok = abs(distance) <= TOLERANCE_SE

    print(
        f"European call  S0={option.S0:g} K={option.K:g} r={option.r:g} sigma={option.sigma:g} T={option.T:g}"
    )
    print(f"Monte Carlo estimate : {estimate.price:.6f}  ({estimate.draws:,} draws)")
    print(f"standard error       : {estimate.stderr:.6f}")
    print(f"Black-Scholes        : {reference:.6f}")
    print(
        f"difference           : {estimate.price - reference:+.6f} = {distance:+.2f} standard "
        f"errors ({'within' if ok else 'OUTSIDE'} {TOLERANCE_SE:g})"
    )
    print(f"invocations          : {invocations} (pool of {workers} function processes)")
    print(f"wall time            : {wall:.2f} s (pool start-up and shutdown included)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
