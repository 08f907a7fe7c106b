/*
 * 06_dynamic_memory.c - malloc, realloc and free.
 *
 * Builds a growable array of integers on the heap, doubling its capacity
 * with realloc as needed, then frees it. Always checks for allocation
 * failure.
 * Expected verdict: ok
 */
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    size_t capacity = 4;
    size_t length = 0;
    int *data = malloc(capacity * sizeof *data);
    if (data == NULL) {
        perror("malloc");
        return EXIT_FAILURE;
    }

    /* Append the first 20 squares, growing the buffer when it is full. */
    for (int i = 1; i <= 20; i++) {
        if (length == capacity) {
            size_t new_capacity = capacity * 2;
            int *bigger = realloc(data, new_capacity * sizeof *data);
            if (bigger == NULL) {
                perror("realloc");
                free(data);
                return EXIT_FAILURE;
            }
            data = bigger;
            capacity = new_capacity;
            printf("Grew buffer to %zu elements\n", capacity);
        }
        data[length++] = i * i;
    }

    long long sum = 0;
    for (size_t i = 0; i < length; i++) {
        sum += data[i];
    }
    printf("Stored %zu squares, last = %d, sum = %lld\n",
           length, data[length - 1], sum);

    /* calloc zero-initialises the memory it returns. */
    double *zeros = calloc(8, sizeof *zeros);
    if (zeros == NULL) {
        perror("calloc");
        free(data);
        return EXIT_FAILURE;
    }
    printf("calloc'd value: %.1f\n", zeros[7]);

    free(zeros);
    free(data);
    printf("Memory freed\n");
    return 0;
}
