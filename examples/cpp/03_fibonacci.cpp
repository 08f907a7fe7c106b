// 03_fibonacci.cpp - Fibonacci numbers, iteratively and recursively.
//
// Prints the first 20 Fibonacci numbers with an O(n) loop, then checks one
// value against a memoised recursive implementation.
// Expected verdict: ok
#include <cstdint>
#include <iostream>
#include <vector>

// Iterative: keeps only the last two values.
std::uint64_t fib_iterative(int n)
{
    std::uint64_t a = 0, b = 1;
    for (int i = 0; i < n; ++i) {
        std::uint64_t next = a + b;
        a = b;
        b = next;
    }
    return a;
}

// Recursive with memoisation: each value is computed only once.
std::uint64_t fib_memo(int n, std::vector<std::uint64_t> &cache)
{
    if (n < 2) {
        return static_cast<std::uint64_t>(n);
    }
    if (cache[n] == 0) {
        cache[n] = fib_memo(n - 1, cache) + fib_memo(n - 2, cache);
    }
    return cache[n];
}

int main()
{
    std::cout << "First 20 Fibonacci numbers:";
    for (int i = 0; i < 20; ++i) {
        std::cout << ' ' << fib_iterative(i);
    }
    std::cout << '\n';

    const int n = 90;   // the largest index that fits comfortably in 64 bits
    std::vector<std::uint64_t> cache(n + 1, 0);
    std::cout << "fib(" << n << ") iterative = " << fib_iterative(n) << '\n';
    std::cout << "fib(" << n << ") memoised  = " << fib_memo(n, cache) << '\n';

    return 0;
}
