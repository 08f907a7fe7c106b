/*
 * 07_stdin_input.c - reading from standard input.
 *
 * Reads a name on the first line, then any number of integers, and prints
 * a greeting together with the count and sum of the numbers.
 * Example stdin:
 *     Ada
 *     3 4 5
 * Expected verdict: ok
 */
#include <stdio.h>
#include <string.h>

int main(void)
{
    char name[64];

    if (fgets(name, sizeof name, stdin) == NULL) {
        fprintf(stderr, "No input given; expected a name on the first line\n");
        return 1;
    }
    name[strcspn(name, "\r\n")] = '\0';     /* strip the trailing newline */
    if (name[0] == '\0') {
        strcpy(name, "stranger");
    }

    printf("Hello, %s!\n", name);

    /* Read integers until end of input (or something that is not a number). */
    long long sum = 0;
    int count = 0;
    long long n;
    while (scanf("%lld", &n) == 1) {
        sum += n;
        count++;
    }

    printf("You gave %d number(s); their sum is %lld\n", count, sum);
    return 0;
}
