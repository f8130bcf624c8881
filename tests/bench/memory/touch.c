/* First touch of a fresh anonymous mapping, timed inside the program:
 * touch.c MiB [populate] maps MiB MiB (with MAP_POPULATE when asked),
 * writes one byte per 4 KiB page, and prints the milliseconds the mmap and
 * the touches took together. Run natively and packed on hvt by run.sh. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 256;
    int populate = argc > 2 && strcmp(argv[2], "populate") == 0;
    size_t len = mib << 20;
    double t0 = now_ms();
    unsigned char *p = mmap(0, len, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0), -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (size_t i = 0; i < len; i += 4096) p[i] = (unsigned char)i;
    double t1 = now_ms();
    unsigned sum = 0;
    for (size_t i = 0; i < len; i += 4096) sum += p[i];
    printf("%.2f ms (check %u)\n", t1 - t0, sum);
    return 0;
}
