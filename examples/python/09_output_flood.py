"""09_output_flood.py - a program that writes far too much output.

Prints numbered lines forever. The sandbox caps combined stdout+stderr and
kills the program once the cap is exceeded.
Expected verdict: output_limit
"""

import itertools

for line in itertools.count(1):
    print(f"Flooding output, line {line}")
