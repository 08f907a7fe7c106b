// 04_prime_numbers.cpp - finding primes with the Sieve of Eratosthenes.
//
// Sieves all primes below 100, prints them, and counts the primes below
// one million.
// Expected verdict: ok
#include <iostream>
#include <vector>

// Returns is_prime[i] for 0 <= i < limit.
std::vector<bool> sieve(int limit)
{
    std::vector<bool> is_prime(limit, true);
    is_prime[0] = false;
    if (limit > 1) {
        is_prime[1] = false;
    }
    for (int i = 2; static_cast<long long>(i) * i < limit; ++i) {
        if (is_prime[i]) {
            // Every multiple of i starting at i*i is composite.
            for (int j = i * i; j < limit; j += i) {
                is_prime[j] = false;
            }
        }
    }
    return is_prime;
}

int main()
{
    const std::vector<bool> small = sieve(100);
    std::cout << "Primes below 100:";
    for (int i = 0; i < 100; ++i) {
        if (small[i]) {
            std::cout << ' ' << i;
        }
    }
    std::cout << '\n';

    const int limit = 1000000;
    const std::vector<bool> big = sieve(limit);
    int count = 0;
    int largest = 0;
    for (int i = 0; i < limit; ++i) {
        if (big[i]) {
            ++count;
            largest = i;
        }
    }
    std::cout << "There are " << count << " primes below " << limit
              << "; the largest is " << largest << '\n';

    return 0;
}
