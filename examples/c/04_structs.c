/*
 * 04_structs.c - defining and using structs.
 *
 * Defines a small struct, stores several instances in an array, passes
 * them to functions by pointer and computes an aggregate.
 * Expected verdict: ok
 */
#include <stdio.h>

typedef struct {
    double x;
    double y;
} Point;

typedef struct {
    char name[32];
    int age;
    Point location;             /* structs can nest */
} Person;

/* Print one person; take a const pointer to avoid copying the struct. */
static void print_person(const Person *p)
{
    printf("%-6s age %2d at (%.1f, %.1f)\n",
           p->name, p->age, p->location.x, p->location.y);
}

/* Modify a struct through a pointer. */
static void have_birthday(Person *p)
{
    p->age++;
}

int main(void)
{
    Person people[] = {
        {"Alice", 30, {1.0, 2.0}},
        {"Bob", 25, {-3.5, 4.0}},
        {"Carol", 41, {0.0, 0.0}},
    };
    const int count = (int)(sizeof people / sizeof people[0]);

    printf("People:\n");
    for (int i = 0; i < count; i++) {
        print_person(&people[i]);
    }

    have_birthday(&people[1]);
    printf("After Bob's birthday:\n");
    print_person(&people[1]);

    int total_age = 0;
    for (int i = 0; i < count; i++) {
        total_age += people[i].age;
    }
    printf("Average age: %.2f\n", (double)total_age / count);
    printf("sizeof(Point) = %zu bytes\n", sizeof(Point));

    return 0;
}
