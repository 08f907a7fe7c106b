// 14_output_flood.cpp - a program that writes far too much output.
//
// Prints numbered lines forever. The sandbox caps combined stdout+stderr
// and kills the program once the cap is exceeded.
// Expected verdict: output_limit
#include <iostream>

int main()
{
    for (unsigned long long line = 1;; ++line) {
        std::cout << "Flooding output, line " << line << '\n';
    }
}
