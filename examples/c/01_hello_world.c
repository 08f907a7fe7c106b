/*
 * 01_hello_world.c - the smallest possible C program.
 *
 * Prints a greeting to standard output and exits with status 0.
 * Expected verdict: ok
 */
#include <stdio.h>

int main(void)
{
    printf("Hello, World!\n");
    return 0;
}
