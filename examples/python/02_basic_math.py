"""02_basic_math.py - arithmetic with ints, floats, fractions and math.

Shows the difference between true division and floor division, Python's
arbitrary-precision integers, exact fractions and a few math functions.
Expected verdict: ok
"""

import math
from fractions import Fraction

a, b = 17, 5

# Basic operators.
print(f"{a} + {b} = {a + b}")
print(f"{a} - {b} = {a - b}")
print(f"{a} * {b} = {a * b}")
print(f"{a} / {b} = {a / b}")  # true division always gives a float
print(f"{a} // {b} = {a // b}")  # floor division
print(f"{a} % {b} = {a % b}")
print(f"{a} ** {b} = {a**b}")
print(f"divmod({a}, {b}) = {divmod(a, b)}")

# Integers never overflow.
print(f"2 ** 100 = {2**100}")

# Floats are binary approximations; fractions are exact.
print(f"0.1 + 0.2 = {0.1 + 0.2!r}")
print(f"Fraction(1, 10) + Fraction(2, 10) = {Fraction(1, 10) + Fraction(2, 10)}")

# The math module.
print(f"sqrt(2) = {math.sqrt(2):.6f}")
print(f"pi = {math.pi:.6f}")
print(f"gcd(84, 36) = {math.gcd(84, 36)}")
print(f"factorial(10) = {math.factorial(10)}")
print(f"isclose(0.1 + 0.2, 0.3) = {math.isclose(0.1 + 0.2, 0.3)}")

# Sum of 1..100 two ways.
print(f"sum(range(1, 101)) = {sum(range(1, 101))}")
