"""04_data_structures.py - lists, tuples, dicts, sets and collections.

Demonstrates the built-in containers and a few helpers from the
collections module. Output is deterministic (sets are sorted before
printing).
Expected verdict: ok
"""

from collections import Counter, defaultdict, deque, namedtuple

# Lists: ordered and mutable.
numbers = [5, 3, 9, 1, 7]
numbers.append(4)
numbers.sort()
print(f"sorted list: {numbers}")
print(f"slice [1:4]: {numbers[1:4]}, reversed: {numbers[::-1]}")
squares = [n * n for n in numbers if n % 2 == 1]
print(f"squares of odd numbers: {squares}")

# Tuples: ordered and immutable; handy for unpacking.
point = (3, 4)
x, y = point
print(f"point {point} unpacked to x={x}, y={y}")

# Named tuples add field names.
Person = namedtuple("Person", ["name", "age"])
alice = Person("Alice", 30)
print(f"{alice.name} is {alice.age}: {alice}")

# Dicts: key -> value mapping (insertion ordered).
ages = {"Alice": 30, "Bob": 25}
ages["Carol"] = 41
print(f"dict: {ages}")
print(f"Bob's age: {ages['Bob']}, Dave's age: {ages.get('Dave', 'unknown')}")
oldest = max(ages, key=ages.get)
print(f"oldest: {oldest}")

# Sets: unique, unordered; support set algebra.
a = {1, 2, 3, 4}
b = {3, 4, 5}
print(f"union: {sorted(a | b)}, intersection: {sorted(a & b)}, difference: {sorted(a - b)}")

# Counter counts hashable items.
words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "the", "end"]
print(f"most common words: {Counter(words).most_common(2)}")

# defaultdict creates missing entries on first access.
by_length = defaultdict(list)
for word in words:
    by_length[len(word)].append(word)
print(f"words by length: {dict(sorted(by_length.items()))}")

# deque: fast appends/pops at both ends (a queue).
queue = deque([1, 2, 3])
queue.appendleft(0)
queue.append(4)
print(f"deque: {list(queue)}, popleft -> {queue.popleft()}, pop -> {queue.pop()}")
