// 13_stdin_input.cpp - reading from standard input.
//
// Reads a name on the first line, then any number of integers, and prints
// a greeting together with the count and sum of the numbers.
// Example stdin:
//     Ada
//     3 4 5
// Expected verdict: ok
#include <iostream>
#include <string>

int main()
{
    std::string name;
    if (!std::getline(std::cin, name)) {
        std::cerr << "No input given; expected a name on the first line\n";
        return 1;
    }
    if (!name.empty() && name.back() == '\r') {
        name.pop_back();   // tolerate Windows line endings
    }
    if (name.empty()) {
        name = "stranger";
    }
    std::cout << "Hello, " << name << "!\n";

    // Read integers until end of input (or something that is not a number).
    long long sum = 0;
    int count = 0;
    for (long long n; std::cin >> n;) {
        sum += n;
        ++count;
    }
    std::cout << "You gave " << count << " number(s); their sum is " << sum << '\n';
    return 0;
}
