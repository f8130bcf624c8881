/* Memory as Linux gives it, checked from inside the guest (run with
 * --mem 64M): mappings cost nothing until touched, mlock populates,
 * mremap grows in place, moves without copying, shrinks, and refuses what
 * Linux refuses. Free memory is read with sysinfo(2). Prints one line per
 * check ("ok NAME" or "FAIL NAME: ...") and "done N failures". */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

static int failures;

static void check(int ok, const char *name, const char *detail) {
    if (ok) {
        printf("ok %s\n", name);
    } else {
        printf("FAIL %s: %s (errno %d)\n", name, detail, errno);
        failures++;
    }
}

static long free_mib(void) {
    struct sysinfo si;
    if (sysinfo(&si) != 0) return -1;
    return (long)(si.freeram * si.mem_unit >> 20);
}

#define PAGE 4096UL
#define MiB (1UL << 20)
#define GiB (1UL << 30)

static int is_mapped(void *p, size_t len) {
    /* mprotect answers ENOMEM for a range with unmapped pages. */
    return mprotect(p, len, PROT_READ | PROT_WRITE) == 0;
}

int main(void) {
    long before = free_mib();

    /* 4 GiB, plain PROT_READ|PROT_WRITE (no MAP_NORESERVE), in a 64 MiB
     * guest: overcommitted as Linux does; one byte per 64 MiB touched. */
    unsigned char *big = mmap(0, 4 * GiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(big != MAP_FAILED, "overcommit_4g", "mmap of 4 GiB failed");
    if (big != MAP_FAILED) {
        int zeros = 1;
        for (unsigned long off = 0; off < 4 * GiB; off += 64 * MiB) {
            if (big[off + 123] != 0) zeros = 0;
            big[off + 123] = (unsigned char)(off >> 26);
        }
        for (unsigned long off = 0; off < 4 * GiB; off += 64 * MiB)
            if (big[off + 123] != (unsigned char)(off >> 26)) zeros = 0;
        check(zeros, "sparse_touch", "a touched byte did not read back");
        long during = free_mib();
        check(before - during < 16, "untouched_is_free", "free memory fell by 16 MiB or more");
        munmap(big, 4 * GiB);
    }

    /* A sequential toucher of 24 MiB: every byte is zero, then kept. */
    unsigned char *seq = mmap(0, 24 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int seq_ok = seq != MAP_FAILED;
    for (unsigned long i = 0; seq_ok && i < 24 * MiB; i += 512) {
        if (seq[i]) seq_ok = 0;
        seq[i] = (unsigned char)(i >> 9);
    }
    for (unsigned long i = 0; seq_ok && i < 24 * MiB; i += 512)
        if (seq[i] != (unsigned char)(i >> 9)) seq_ok = 0;
    check(seq_ok, "sequential_24m", "a byte was not zero or not kept");
    /* Downwards, as a stack grows. */
    int down_ok = seq != MAP_FAILED;
    munmap(seq, 24 * MiB);
    seq = mmap(0, 8 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (long i = 8 * MiB - 1; down_ok && i >= 0; i -= 1000) {
        if (seq[i]) down_ok = 0;
        seq[i] = 7;
    }
    check(down_ok, "downward_8m", "a byte was not zero");
    munmap(seq, 8 * MiB);

    /* mlock gives frames now; munmap gives them back. */
    long pre = free_mib();
    unsigned char *locked = mmap(0, 16 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    check(free_mib() > pre - 4, "mmap_is_free", "an untouched mapping took frames");
    check(mlock(locked, 16 * MiB) == 0, "mlock", "mlock failed");
    check(free_mib() <= pre - 15, "mlock_populates", "mlock did not take 16 MiB");
    munmap(locked, 16 * MiB);
    check(free_mib() >= pre - 1, "munmap_frees", "munmap did not give the frames back");
    unsigned char *huge = mmap(0, GiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    errno = 0;
    check(mlock(huge, GiB) == -1 && errno == EAGAIN, "mlock_too_much", "mlock of 1 GiB in 64 MiB did not fail with EAGAIN");
    munmap(huge, GiB);
    check(free_mib() >= pre - 1, "failed_mlock_frees", "frames of a failed mlock were not given back by munmap");
    errno = 0;
    check(mlock((void *)0x100000000000UL, PAGE) == -1 && errno == ENOMEM, "mlock_unmapped", "mlock of an unmapped page did not fail with ENOMEM");
    void *pop = mmap(0, 8 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    check(free_mib() <= pre - 7, "map_populate", "MAP_POPULATE did not take 8 MiB");
    munmap(pop, 8 * MiB);

    /* mremap: grow in place when the pages after are free. */
    unsigned char *a = mmap(0, 32 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(a + 16 * PAGE, 16 * PAGE);
    memset(a, 0xa5, 16 * PAGE);
    unsigned char *g = mremap(a, 16 * PAGE, 32 * PAGE, 0);
    check(g == a && a[16 * PAGE - 1] == 0xa5 && a[31 * PAGE] == 0, "mremap_grow_in_place", "not in place, or contents wrong");

    /* Blocked growth: ENOMEM without MREMAP_MAYMOVE, a move with it. */
    unsigned char *wall = mmap(a + 32 * PAGE, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    errno = 0;
    check(wall == a + 32 * PAGE && mremap(a, 32 * PAGE, 64 * PAGE, 0) == MAP_FAILED && errno == ENOMEM,
          "mremap_blocked", "growth past a mapping did not fail with ENOMEM");
    for (int i = 0; i < 32; i++) a[i * PAGE + 7] = (unsigned char)i;
    unsigned char *m = mremap(a, 32 * PAGE, 64 * PAGE, MREMAP_MAYMOVE);
    int moved_ok = m != MAP_FAILED && m != a;
    for (int i = 0; moved_ok && i < 32; i++)
        if (m[i * PAGE + 7] != (unsigned char)i) moved_ok = 0;
    check(moved_ok && m[40 * PAGE] == 0, "mremap_move_keeps_contents", "moved contents differ");
    check(!is_mapped(a, PAGE), "mremap_move_unmaps_old", "the old range is still mapped");
    munmap(wall, PAGE);

    /* MREMAP_FIXED to a chosen address, replacing what was there. */
    unsigned char *target = mmap(0, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(target, 0x11, 8 * PAGE);
    unsigned char *f = mremap(m, 64 * PAGE, 8 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, target);
    check(f == target && f[7] == 0 && f[5 * PAGE + 7] == 5 && !is_mapped(m, PAGE), "mremap_fixed", "not at the target, or contents wrong");

    /* Shrink in place: the tail goes away. */
    unsigned char *s = mremap(f, 8 * PAGE, 2 * PAGE, 0);
    check(s == f && f[PAGE + 7] == 1 && !is_mapped(f + 2 * PAGE, PAGE), "mremap_shrink", "the tail is still mapped");

    /* What Linux refuses. */
    errno = 0;
    check(mremap(f + 1, PAGE, 2 * PAGE, MREMAP_MAYMOVE) == MAP_FAILED && errno == EINVAL, "mremap_unaligned", "not EINVAL");
    errno = 0;
    check(mremap((void *)0x200000000000UL, PAGE, 2 * PAGE, MREMAP_MAYMOVE) == MAP_FAILED && errno == EFAULT, "mremap_unmapped", "not EFAULT");
    errno = 0;
    check(mremap(f, PAGE, 2 * PAGE, MREMAP_FIXED, f + 100 * PAGE) == MAP_FAILED && errno == EINVAL, "mremap_fixed_needs_maymove", "not EINVAL");
    errno = 0;
    check(mremap(f, 2 * PAGE, 0, MREMAP_MAYMOVE) == MAP_FAILED && errno == EINVAL, "mremap_zero", "not EINVAL");
    munmap(f, 2 * PAGE);

    /* A big realloc (musl moves big chunks with mremap): contents survive. */
    unsigned char *r = malloc(2 * MiB);
    for (int i = 0; r && i < 2 * (int)MiB; i += 4096) r[i] = (unsigned char)(i >> 12);
    unsigned char *r2 = r ? realloc(r, 40 * MiB) : 0;
    int r_ok = r2 != 0;
    for (int i = 0; r_ok && i < 2 * (int)MiB; i += 4096)
        if (r2[i] != (unsigned char)(i >> 12)) r_ok = 0;
    check(r_ok, "realloc_big", "contents lost");
    free(r2);

    printf("done %d failures\n", failures);
    return failures != 0;
}
