"""01_hello_world.py - the smallest possible Python program.

Prints a greeting to standard output and exits with status 0.
Expected verdict: ok
"""

print("Hello, World!")
