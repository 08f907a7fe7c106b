/*
 * 09_memory_exhaustion.c - allocating until memory runs out.
 *
 * Repeatedly allocates 256 MiB blocks and keeps them all (chained into a
 * linked list). Only the first bytes of each block are touched, so the
 * kernel does not have to back the whole block with real pages: the program
 * quickly reaches the sandbox's address-space limit, malloc returns NULL and
 * perror prints "malloc: Cannot allocate memory". It then exits with 1.
 * Expected verdict: memory_limit
 */
#include <stdio.h>
#include <stdlib.h>

#define BLOCK_SIZE ((size_t)256 * 1024 * 1024)   /* 256 MiB */

/* The start of every block links to the previously allocated block. */
typedef struct Block {
    struct Block *previous;
} Block;

int main(void)
{
    Block *newest = NULL;
    size_t blocks = 0;

    for (;;) {
        Block *block = malloc(BLOCK_SIZE);
        if (block == NULL) {
            /* errno is ENOMEM here: prints "malloc: Cannot allocate memory" */
            perror("malloc");
            fprintf(stderr, "Gave up after %zu blocks (%zu MiB)\n",
                    blocks, blocks * (BLOCK_SIZE >> 20));
            break;
        }
        block->previous = newest;   /* touches (only) the block's first page */
        newest = block;
        blocks++;
        printf("Allocated %zu MiB so far\n", blocks * (BLOCK_SIZE >> 20));
        fflush(stdout);
    }

    /* Tidy up before reporting failure. */
    while (newest != NULL) {
        Block *previous = newest->previous;
        free(newest);
        newest = previous;
    }
    return 1;
}
