/*
 * 08_infinite_loop.c - a program that never finishes.
 *
 * Prints one line (flushed, so it survives the kill) and then spins in a
 * pure CPU busy loop. The sandbox stops it when the CPU time limit is hit.
 * Expected verdict: cpu_time_limit
 */
#include <stdio.h>

int main(void)
{
    printf("Starting an infinite loop...\n");
    fflush(stdout);             /* make sure the line is not lost on kill */

    /* volatile stops the compiler from optimising the loop away. */
    volatile unsigned long counter = 0;
    for (;;) {
        counter++;
    }

    return 0;                   /* never reached */
}
