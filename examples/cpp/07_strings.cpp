// 07_strings.cpp - working with std::string.
//
// Concatenation, searching, substrings, case conversion, reversing,
// splitting on a delimiter and number/string conversion.
// Expected verdict: ok
#include <algorithm>
#include <cctype>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

int main()
{
    std::string greeting = "Hello";
    greeting += ", C++ strings";
    std::cout << greeting << " (length " << greeting.size() << ")\n";

    // Searching and substrings.
    const std::size_t pos = greeting.find("C++");
    std::cout << "\"C++\" found at index " << pos << '\n';
    std::cout << "substring: " << greeting.substr(pos, 3) << '\n';

    // Upper-case copy (cast to unsigned char before calling toupper).
    std::string upper = greeting;
    std::transform(upper.begin(), upper.end(), upper.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    std::cout << "upper: " << upper << '\n';

    // Reversed copy.
    std::string reversed(greeting.rbegin(), greeting.rend());
    std::cout << "reversed: " << reversed << '\n';

    // Palindrome check.
    const std::string word = "racecar";
    const bool palindrome = std::equal(word.begin(), word.begin() + word.size() / 2, word.rbegin());
    std::cout << word << " is " << (palindrome ? "" : "not ") << "a palindrome\n";

    // Splitting a comma-separated list.
    std::vector<std::string> parts;
    std::istringstream stream("apple,banana,cherry");
    for (std::string item; std::getline(stream, item, ',');) {
        parts.push_back(item);
    }
    std::cout << "split into " << parts.size() << " parts:";
    for (const auto &p : parts) {
        std::cout << " [" << p << ']';
    }
    std::cout << '\n';

    // Conversions between numbers and strings.
    const int n = std::stoi("1234");
    std::cout << "stoi(\"1234\") + 1 = " << n + 1 << '\n';
    std::cout << "to_string(3 * 7) = \"" << std::to_string(3 * 7) << "\"\n";

    return 0;
}
