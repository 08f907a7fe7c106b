"""08_slow_computation.py - a computation that takes a visible moment.

Counts primes by trial division and estimates pi with the Leibniz series,
reporting progress as it goes. It takes a noticeable fraction of a second
but finishes comfortably within the default 1 s CPU limit.
Expected verdict: ok
"""

import sys
import time


def is_prime(n):
    """Trial division: slow on purpose, but correct."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    divisor = 3
    while divisor * divisor <= n:
        if n % divisor == 0:
            return False
        divisor += 2
    return True


def leibniz_pi(terms):
    """pi = 4 * (1 - 1/3 + 1/5 - 1/7 + ...), converging very slowly."""
    total = 0.0
    sign = 1.0
    for k in range(terms):
        total += sign / (2 * k + 1)
        sign = -sign
    return 4 * total


start = time.process_time()

limit = 150_000
print(f"Step 1/2: counting primes below {limit} by trial division...", flush=True)
prime_count = sum(1 for n in range(limit) if is_prime(n))
print(f"  found {prime_count} primes", flush=True)

terms = 600_000
print(f"Step 2/2: estimating pi with {terms} Leibniz terms...", flush=True)
print(f"  pi is about {leibniz_pi(terms):.5f}", flush=True)

# Timing varies from run to run, so it goes to stderr to keep stdout
# deterministic.
print(f"CPU time used: {time.process_time() - start:.2f} s", file=sys.stderr)
print("Done")
