/*
 * 02_basic_math.c - integer and floating-point arithmetic.
 *
 * Shows the basic operators, integer division vs. floating-point division,
 * and a few functions from <math.h> (linked with -lm).
 * Expected verdict: ok
 */
#include <math.h>
#include <stdio.h>

int main(void)
{
    int a = 17;
    int b = 5;

    /* Integer arithmetic: '/' truncates toward zero, '%' is the remainder. */
    printf("%d + %d = %d\n", a, b, a + b);
    printf("%d - %d = %d\n", a, b, a - b);
    printf("%d * %d = %d\n", a, b, a * b);
    printf("%d / %d = %d\n", a, b, a / b);
    printf("%d %% %d = %d\n", a, b, a % b);

    /* Floating-point division keeps the fractional part. */
    double x = (double)a / b;
    printf("%d / %d as double = %.2f\n", a, b, x);

    /* A few standard math library functions. */
    printf("sqrt(2)    = %.6f\n", sqrt(2.0));
    printf("pow(2, 10) = %.0f\n", pow(2.0, 10.0));
    printf("floor(-2.5) = %.1f, ceil(-2.5) = %.1f\n", floor(-2.5), ceil(-2.5));
    printf("pi (acos(-1)) = %.6f\n", acos(-1.0));

    /* Sum of 1..100 by loop and by formula must agree. */
    int sum = 0;
    for (int i = 1; i <= 100; i++) {
        sum += i;
    }
    printf("Sum of 1..100 = %d (formula: %d)\n", sum, 100 * 101 / 2);

    return 0;
}
