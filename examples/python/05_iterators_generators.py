"""05_iterators_generators.py - lazy sequences with iterators and generators.

Shows a custom iterator class, generator functions, generator expressions,
infinite generators tamed with itertools, and a generator pipeline.
Expected verdict: ok
"""

import itertools


class Countdown:
    """An iterator class: implements __iter__ and __next__."""

    def __init__(self, start):
        self.current = start

    def __iter__(self):
        return self

    def __next__(self):
        if self.current <= 0:
            raise StopIteration
        value = self.current
        self.current -= 1
        return value


def fibonacci():
    """An infinite generator: values are produced only when requested."""
    a, b = 0, 1
    while True:
        yield a
        a, b = b, a + b


def read_records(lines):
    """Pipeline stage 1: parse 'name,score' lines."""
    for line in lines:
        name, score = line.split(",")
        yield name, int(score)


def passing(records, threshold):
    """Pipeline stage 2: keep only records at or above the threshold."""
    for name, score in records:
        if score >= threshold:
            yield name, score


print(f"Countdown: {list(Countdown(5))}")

# islice takes a finite prefix of an infinite generator.
print(f"First 10 Fibonacci numbers: {list(itertools.islice(fibonacci(), 10))}")

# A generator expression computes lazily; sum() consumes it.
print(f"Sum of squares below 1000: {sum(n * n for n in range(1000))}")

# Iterators are exhausted after one pass.
squares = (n * n for n in range(4))
print(f"first pass: {list(squares)}, second pass: {list(squares)}")

# Chaining generators into a pipeline.
raw = ["alice,91", "bob,62", "carol,78", "dave,45"]
for name, score in passing(read_records(raw), 70):
    print(f"passed: {name} ({score})")

# A few itertools helpers.
print(f"chain: {list(itertools.chain('ab', [1, 2]))}")
print(f"pairs: {list(itertools.combinations('ABC', 2))}")
print(f"running totals: {list(itertools.accumulate([1, 2, 3, 4]))}")
