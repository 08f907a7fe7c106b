"""03_file_operations.py - writing, appending, reading and deleting files.

Works inside the current (temporary, writable) directory using pathlib and
context managers, so files are always closed properly.
Expected verdict: ok
"""

import json
from pathlib import Path

text_file = Path("example_notes.txt")

# Write (creates or truncates the file).
with text_file.open("w", encoding="utf-8") as f:
    for i in range(1, 4):
        f.write(f"Line {i}: {i} squared is {i * i}\n")
print(f"Wrote {text_file.stat().st_size} bytes to {text_file}")

# Append one more line.
with text_file.open("a", encoding="utf-8") as f:
    f.write("Appended line\n")

# Read back line by line.
with text_file.open(encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
        print(f"Read {number}: {line.rstrip()}")

# JSON round trip.
json_file = Path("example_data.json")
data = {"name": "DCodeX", "languages": ["c", "cpp", "python"], "version": 1}
json_file.write_text(json.dumps(data, indent=2), encoding="utf-8")
loaded = json.loads(json_file.read_text(encoding="utf-8"))
print(f"JSON round trip equal: {loaded == data}")

# List what we created, then clean up.
created = sorted(p.name for p in Path(".").glob("example_*"))
print(f"Files created: {created}")
for path in (text_file, json_file):
    path.unlink()
print(f"Files remaining: {sorted(p.name for p in Path('.').glob('example_*'))}")
