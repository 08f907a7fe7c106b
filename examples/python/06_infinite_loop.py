"""06_infinite_loop.py - a program that never finishes.

Prints one line (flushed, so it survives the kill) and then spins in a pure
CPU busy loop until the sandbox's CPU time limit stops it.
Expected verdict: cpu_time_limit
"""

print("Starting an infinite loop...", flush=True)

counter = 0
while True:
    counter += 1
