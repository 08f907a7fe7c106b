// 12_memory_exhaustion.cpp - allocating until memory runs out.
//
// Repeatedly allocates 256 MiB blocks with new[] and never frees them. Only
// one byte per block is touched, so the kernel does not have to back the
// blocks with real pages and the program quickly hits the sandbox's
// address-space limit. new[] then throws std::bad_alloc, which is reported
// on stderr before exiting with a non-zero status.
// Expected verdict: memory_limit
#include <cstddef>
#include <iostream>
#include <new>
#include <vector>

int main()
{
    constexpr std::size_t block_size = std::size_t{256} * 1024 * 1024;   // 256 MiB
    std::vector<char *> blocks;    // keep every block reachable ("leak" on purpose)

    try {
        for (;;) {
            char *block = new char[block_size];
            block[0] = 1;          // touch the block so it is really used
            blocks.push_back(block);
            std::cout << "Allocated " << blocks.size() * (block_size >> 20)
                      << " MiB so far" << std::endl;
        }
    } catch (const std::bad_alloc &e) {
        // e.what() is "std::bad_alloc"
        std::cerr << "Out of memory: " << e.what() << " after "
                  << blocks.size() << " blocks" << std::endl;
    }

    for (char *block : blocks) {
        delete[] block;
    }
    return 1;
}
