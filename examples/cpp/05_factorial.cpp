// 05_factorial.cpp - factorials, recursion and overflow awareness.
//
// Computes n! recursively and iteratively for small n using 64-bit
// integers (20! is the largest that fits), then computes 50! exactly with
// a simple big-number multiplication on a vector of decimal digits.
// Expected verdict: ok
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

std::uint64_t factorial_recursive(unsigned n)
{
    return n <= 1 ? 1 : n * factorial_recursive(n - 1);
}

std::uint64_t factorial_iterative(unsigned n)
{
    std::uint64_t result = 1;
    for (unsigned i = 2; i <= n; ++i) {
        result *= i;
    }
    return result;
}

// Exact factorial as a decimal string. Digits are stored least-significant
// first and multiplied by each factor in turn.
std::string big_factorial(unsigned n)
{
    std::vector<int> digits{1};
    for (unsigned factor = 2; factor <= n; ++factor) {
        unsigned carry = 0;
        for (int &d : digits) {
            unsigned value = static_cast<unsigned>(d) * factor + carry;
            d = static_cast<int>(value % 10);
            carry = value / 10;
        }
        while (carry > 0) {
            digits.push_back(static_cast<int>(carry % 10));
            carry /= 10;
        }
    }
    std::string text;
    for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
        text += static_cast<char>('0' + *it);
    }
    return text;
}

int main()
{
    for (unsigned n : {0u, 1u, 5u, 10u, 20u}) {
        std::cout << n << "! = " << factorial_recursive(n)
                  << " (iterative: " << factorial_iterative(n) << ")\n";
    }

    std::cout << "50! = " << big_factorial(50) << '\n';
    return 0;
}
