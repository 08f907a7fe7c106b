/*
 * 05_file_io.c - writing and reading a file.
 *
 * Creates a file in the current (temporary, writable) directory, writes a
 * few lines, reads them back line by line, and removes the file.
 * Expected verdict: ok
 */
#include <stdio.h>
#include <stdlib.h>

#define FILE_NAME "example_output.txt"

int main(void)
{
    /* Write some lines. */
    FILE *out = fopen(FILE_NAME, "w");
    if (out == NULL) {
        perror("fopen for writing");
        return EXIT_FAILURE;
    }
    for (int i = 1; i <= 5; i++) {
        fprintf(out, "Line %d: %d squared is %d\n", i, i, i * i);
    }
    fclose(out);
    printf("Wrote 5 lines to %s\n", FILE_NAME);

    /* Read them back. */
    FILE *in = fopen(FILE_NAME, "r");
    if (in == NULL) {
        perror("fopen for reading");
        return EXIT_FAILURE;
    }
    char line[128];
    int lines_read = 0;
    while (fgets(line, sizeof line, in) != NULL) {
        printf("Read: %s", line);
        lines_read++;
    }
    fclose(in);
    printf("Read %d lines back\n", lines_read);

    /* Clean up. */
    if (remove(FILE_NAME) != 0) {
        perror("remove");
        return EXIT_FAILURE;
    }
    printf("File removed\n");

    return 0;
}
