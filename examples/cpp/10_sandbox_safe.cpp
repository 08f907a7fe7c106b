// 10_sandbox_safe.cpp - a well-behaved program that respects the sandbox.
//
// Does only safe things: computes in memory, creates a small file in the
// current (temporary) directory, reads it back, removes it, and writes a
// modest amount of output. No network, no process spawning, no attempts to
// escape.
// Expected verdict: ok
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>

namespace fs = std::filesystem;

int main()
{
    // 1. Pure computation.
    std::vector<int> values(1000);
    std::iota(values.begin(), values.end(), 1);
    const long long sum = std::accumulate(values.begin(), values.end(), 0LL);
    std::cout << "Sum of 1..1000 = " << sum << '\n';

    // 2. Use the writable working directory for a scratch file.
    const fs::path file = "sandbox_safe_scratch.txt";
    {
        std::ofstream out(file);
        if (!out) {
            std::cerr << "could not create " << file << '\n';
            return 1;
        }
        for (int i = 1; i <= 3; ++i) {
            out << "record " << i << '\n';
        }
    }
    std::cout << "Wrote " << fs::file_size(file) << " bytes to " << file.string() << '\n';

    std::ifstream in(file);
    int lines = 0;
    for (std::string line; std::getline(in, line);) {
        ++lines;
    }
    in.close();
    std::cout << "Read back " << lines << " lines\n";

    fs::remove(file);
    std::cout << "Scratch file removed: " << std::boolalpha << !fs::exists(file) << '\n';

    std::cout << "All safe operations completed\n";
    return 0;
}
