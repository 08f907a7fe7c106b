// 01_hello_world.cpp - the smallest possible C++ program.
//
// Prints a greeting to standard output and exits with status 0.
// Expected verdict: ok
#include <iostream>

int main()
{
    std::cout << "Hello, World!" << std::endl;
    return 0;
}
