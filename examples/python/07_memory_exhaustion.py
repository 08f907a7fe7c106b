"""07_memory_exhaustion.py - allocating until memory runs out.

Keeps appending 256 MiB zero-filled bytes objects to a list and never
releases them. bytes(n) is allocated with calloc, which the C library
satisfies with fresh, lazily mapped pages, so each block costs almost no
CPU time and the program quickly reaches the sandbox's address-space limit.
(bytearray(n), by contrast, explicitly zeroes every page and would run into
the CPU time limit first.) Python then raises MemoryError, which is left
uncaught: the traceback goes to stderr and the exit status is 1.
Expected verdict: memory_limit
"""

BLOCK_SIZE = 256 * 2**20  # 256 MiB

blocks = []
while True:
    blocks.append(bytes(BLOCK_SIZE))
    print(f"Allocated {len(blocks) * 256} MiB so far", flush=True)
