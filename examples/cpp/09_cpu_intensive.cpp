// 09_cpu_intensive.cpp - a real but bounded amount of computation.
//
// Multiplies two 300x300 matrices and checks the Collatz conjecture for
// every start value below one million. Takes a noticeable fraction of a second
// but finishes well within the default 1 s CPU limit.
// Expected verdict: ok
#include <cstdint>
#include <iostream>
#include <vector>

// Naive O(n^3) matrix multiplication; returns the trace of A * B.
double matrix_trace_of_product(int n)
{
    std::vector<double> a(n * n), b(n * n), c(n * n, 0.0);
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < n; ++j) {
            a[i * n + j] = (i + j) % 7;
            b[i * n + j] = (i * j) % 5;
        }
    }
    for (int i = 0; i < n; ++i) {
        for (int k = 0; k < n; ++k) {
            const double aik = a[i * n + k];
            for (int j = 0; j < n; ++j) {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    double trace = 0.0;
    for (int i = 0; i < n; ++i) {
        trace += c[i * n + i];
    }
    return trace;
}

// Number of Collatz steps needed to reach 1 from n.
int collatz_steps(std::uint64_t n)
{
    int steps = 0;
    while (n != 1) {
        n = (n % 2 == 0) ? n / 2 : 3 * n + 1;
        ++steps;
    }
    return steps;
}

int main()
{
    const int n = 300;
    std::cout << "Trace of the " << n << "x" << n << " matrix product: "
              << static_cast<long long>(matrix_trace_of_product(n)) << '\n';

    const int limit = 1000000;
    int best_start = 1;
    int best_steps = 0;
    for (int i = 1; i < limit; ++i) {
        const int steps = collatz_steps(static_cast<std::uint64_t>(i));
        if (steps > best_steps) {
            best_steps = steps;
            best_start = i;
        }
    }
    std::cout << "Longest Collatz chain below " << limit << " starts at "
              << best_start << " (" << best_steps << " steps)\n";

    std::cout << "Done\n";
    return 0;
}
