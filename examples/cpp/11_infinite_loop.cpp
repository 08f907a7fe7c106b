// 11_infinite_loop.cpp - a program that never finishes.
//
// Prints one line (flushed with std::endl so it survives the kill) and then
// spins in a pure CPU busy loop until the sandbox's CPU time limit stops it.
// Expected verdict: cpu_time_limit
#include <iostream>

int main()
{
    std::cout << "Starting an infinite loop..." << std::endl;

    // volatile stops the compiler from optimising the loop away
    // (an infinite loop without side effects is undefined behaviour in C++).
    volatile unsigned long counter = 0;
    for (;;) {
        counter = counter + 1;
    }
}
