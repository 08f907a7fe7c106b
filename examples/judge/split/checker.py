"""Checker of `split` (testlib convention): checker.py input output answer.

Exit 0: accepted; 1: wrong answer; 2: presentation error (not two integers).
"""

import sys
from pathlib import Path

n = int(Path(sys.argv[1]).read_text())
tokens = Path(sys.argv[2]).read_text().split()
if len(tokens) != 2 or not all(t.lstrip("-").isdigit() for t in tokens):
    print(f"expected two integers, found {tokens[:3]}", file=sys.stderr)
    sys.exit(2)
a, b = map(int, tokens)
if a <= 0 or b <= 0 or a + b != n:
    print(f"{a} + {b} is not a split of {n} into positive parts", file=sys.stderr)
    sys.exit(1)
print(f"{a} + {b} = {n}", file=sys.stderr)
