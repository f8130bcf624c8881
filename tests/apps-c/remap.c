/* Mappings reused at the same address after munmap read fresh zeros and
 * keep what is written: a stale TLB entry after an munmap (an unmapped
 * page whose flush was skipped) makes the new mapping read and write the
 * old, freed frame. Anonymous private mappings, and a shared file mapping
 * between them, 200 rounds; prints "bad 0" when every check held. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int touch(unsigned char *p, size_t n, unsigned char v) {
    int bad = 0;
    for (size_t i = 0; i < n; i += 64) {
        if (p[i]) bad++;
        p[i] = v;
    }
    for (size_t i = 0; i < n; i += 64)
        if (p[i] != v) bad++;
    return bad;
}

int main(void) {
    int bad = 0;
    char buf[8192];
    memset(buf, '.', sizeof buf);
    for (int round = 0; round < 200; round++) {
        unsigned char *a = mmap(0, 0x7000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        bad += touch(a, 0x7000, 0x55);
        munmap(a, 0x7000);
        int fd = open("/tmp/remap", O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, buf, sizeof buf) != sizeof buf) return 2;
        unsigned char *m = mmap(0, 0x2000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        m[100] = 'x';
        m[5000] = 'y';
        unsigned char *b = mmap(0, 0x7000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        bad += touch(b, 0x7000, 0x66);
        munmap(b, 0x7000);
        munmap(m, 0x2000);
        close(fd);
        unsigned char *c = mmap(0, 0x7000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        bad += touch(c, 0x7000, (unsigned char)(round + 1));
        munmap(c, 0x7000);
    }
    printf("bad %d\n", bad);
    return bad != 0;
}
