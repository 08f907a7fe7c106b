// 06_arrays_and_vectors.cpp - std::array, std::vector and <algorithm>.
//
// Demonstrates fixed-size arrays, growable vectors, range-based for loops
// and common algorithms (sort, find, accumulate, transform, remove_if).
// Expected verdict: ok
#include <algorithm>
#include <array>
#include <iostream>
#include <numeric>
#include <vector>

// Print any container of ints on one line.
template <typename Container>
void print(const char *label, const Container &values)
{
    std::cout << label << ':';
    for (int v : values) {
        std::cout << ' ' << v;
    }
    std::cout << '\n';
}

int main()
{
    // A fixed-size array: its size is part of the type.
    std::array<int, 5> fixed{5, 3, 9, 1, 7};
    print("array", fixed);
    std::sort(fixed.begin(), fixed.end());
    print("sorted array", fixed);

    // A vector grows as needed.
    std::vector<int> numbers;
    for (int i = 1; i <= 10; ++i) {
        numbers.push_back(i * 3 % 11);
    }
    print("vector", numbers);
    std::cout << "size = " << numbers.size() << '\n';

    const int sum = std::accumulate(numbers.begin(), numbers.end(), 0);
    std::cout << "sum = " << sum << '\n';

    auto max_it = std::max_element(numbers.begin(), numbers.end());
    std::cout << "max = " << *max_it << " at index "
              << (max_it - numbers.begin()) << '\n';

    auto found = std::find(numbers.begin(), numbers.end(), 7);
    std::cout << "7 is " << (found != numbers.end() ? "present" : "absent") << '\n';

    // Square every element in place.
    std::transform(numbers.begin(), numbers.end(), numbers.begin(),
                   [](int x) { return x * x; });
    print("squared", numbers);

    // Erase-remove idiom: drop the odd values.
    numbers.erase(std::remove_if(numbers.begin(), numbers.end(),
                                 [](int x) { return x % 2 != 0; }),
                  numbers.end());
    print("even squares", numbers);

    // A 2-D vector (3x4 multiplication table).
    std::vector<std::vector<int>> table(3, std::vector<int>(4));
    for (int r = 0; r < 3; ++r) {
        for (int c = 0; c < 4; ++c) {
            table[r][c] = (r + 1) * (c + 1);
        }
        print("row", table[r]);
    }

    return 0;
}
