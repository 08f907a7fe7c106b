// 02_basic_math.cpp - arithmetic, <cmath> and <numeric>.
//
// Shows integer vs. floating-point arithmetic, a few <cmath> functions,
// and gcd/lcm from <numeric> (C++17).
// Expected verdict: ok
#include <cmath>
#include <iomanip>
#include <iostream>
#include <numeric>

int main()
{
    const int a = 17;
    const int b = 5;

    // Integer arithmetic: '/' truncates, '%' is the remainder.
    std::cout << a << " + " << b << " = " << a + b << '\n';
    std::cout << a << " - " << b << " = " << a - b << '\n';
    std::cout << a << " * " << b << " = " << a * b << '\n';
    std::cout << a << " / " << b << " = " << a / b << '\n';
    std::cout << a << " % " << b << " = " << a % b << '\n';

    // Floating-point division keeps the fractional part.
    std::cout << std::fixed << std::setprecision(4);
    std::cout << a << " / " << b << " as double = " << static_cast<double>(a) / b << '\n';

    // Some <cmath> functions.
    std::cout << "sqrt(2)     = " << std::sqrt(2.0) << '\n';
    std::cout << "pow(2, 0.5) = " << std::pow(2.0, 0.5) << '\n';
    std::cout << "hypot(3, 4) = " << std::hypot(3.0, 4.0) << '\n';
    std::cout << "pi          = " << std::acos(-1.0) << '\n';

    // gcd and lcm from <numeric>.
    std::cout << "gcd(84, 36) = " << std::gcd(84, 36) << '\n';
    std::cout << "lcm(4, 6)   = " << std::lcm(4, 6) << '\n';

    return 0;
}
