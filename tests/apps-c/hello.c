#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static int counter = 0, ready = 0;
static void *worker(void *arg) {
    for (int i = 0; i < 1000; i++) { pthread_mutex_lock(&m); counter++; pthread_mutex_unlock(&m); }
    pthread_mutex_lock(&m); ready++; pthread_cond_signal(&c); pthread_mutex_unlock(&m);
    return arg;
}
int main(int argc, char **argv) {
    printf("argc %d:", argc);
    for (int i = 0; i < argc; i++) printf(" %s", argv[i]);
    printf("\nenv GREETING=%s\n", getenv("GREETING") ? getenv("GREETING") : "<unset>");
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, NULL);
    pthread_mutex_lock(&m); while (ready < 4) pthread_cond_wait(&c, &m); pthread_mutex_unlock(&m);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("threads counted %d\n", counter);
    size_t n = 32u << 20; unsigned char *p = malloc(n);
    if (!p) { fprintf(stderr, "malloc failed\n"); return 3; }
    memset(p, 0xab, n); unsigned long sum = 0; for (size_t i = 0; i < n; i += 4096) sum += p[i];
    printf("malloc 32 MiB: %s\n", sum == (n / 4096) * 0xab ? "ok" : "bad");
    struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
    struct timespec d = {0, 20 * 1000 * 1000}; nanosleep(&d, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    printf("slept 20 ms: %s\n", ms >= 20 && ms < 500 ? "ok" : "bad");
    fprintf(stderr, "to stderr\n");
    return argc > 1 ? atoi(argv[argc - 1]) : 0;
}
