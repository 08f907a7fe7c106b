/*
 * 03_pointers.c - pointers, addresses and pointer arithmetic.
 *
 * Demonstrates taking an address, dereferencing, passing pointers to
 * functions so they can modify the caller's variables, and walking an
 * array with pointer arithmetic. Addresses themselves are not printed,
 * so the output is deterministic.
 * Expected verdict: ok
 */
#include <stddef.h>
#include <stdio.h>

/* Swap two integers through pointers. */
static void swap(int *a, int *b)
{
    int tmp = *a;
    *a = *b;
    *b = tmp;
}

int main(void)
{
    int value = 42;
    int *p = &value;            /* p holds the address of value */

    printf("value = %d, *p = %d\n", value, *p);
    *p = 100;                   /* writing through the pointer changes value */
    printf("after *p = 100: value = %d\n", value);

    int x = 1;
    int y = 2;
    swap(&x, &y);
    printf("after swap: x = %d, y = %d\n", x, y);

    /* Pointer arithmetic: p + i points at the i-th element. */
    int numbers[] = {10, 20, 30, 40, 50};
    size_t count = sizeof numbers / sizeof numbers[0];
    int sum = 0;
    for (int *q = numbers; q < numbers + count; q++) {
        sum += *q;
    }
    printf("array sum via pointers = %d\n", sum);
    printf("numbers[3] = %d, *(numbers + 3) = %d\n", numbers[3], *(numbers + 3));

    /* A pointer to a pointer. */
    int **pp = &p;
    printf("**pp = %d\n", **pp);

    /* A null pointer must be checked before use. */
    int *nothing = NULL;
    printf("null pointer is %s\n", nothing == NULL ? "NULL" : "not NULL");

    return 0;
}
