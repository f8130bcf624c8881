/* A tiny hvt test kernel for the block device tests, built by the test
 * with gcc into a flat binary at the kernel's entry (like net/kernel.c).
 * It runs at ring 3 with %rdi = BootInfo and talks to the monitor only
 * through hypercalls. MODE selects what it does:
 *   1 info:      print every disk's name, sectors and flags, and the
 *                declared disks from the BootInfo
 *   2 rw:        disk 0: read sectors 0..7 and print their checksum and
 *                first bytes; write sectors 8..15 with a pattern (several
 *                requests in flight); write 1 MiB at sector 64; flush;
 *                read back and compare; print the statuses
 *   3 rowrite:   disk 0: try one write, print its status; then a read
 *   4 badindex:  publish a producer index far beyond the ring size
 *   5 badbuf:    a read whose buffer lies outside RAM
 *   6 badsector: a read of sectors past the end of the disk
 *   7 badlen:    a read whose length is near 2^64
 *   8 badspin:   a request past the end that the I/O thread serves, then
 *                spin: the monitor must kick us out
 *   9 bench:     write 64 MiB sequentially (1 MiB requests, 16 in
 *                flight), flush, read it back; print TSC cycles of each
 *  10 badop:     a request with an unknown op
 * No globals: the image's only segment is read-only; all state lives on
 * the stack and in a free RAM range from the BootInfo. */
typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned char u8;

#define SLOT(n) ((volatile u64 *)(0xFFFF0000UL + 8 * (n)))
enum { CONSOLE_WRITE = 1, HALT = 5, BLOCK_INFO = 10, BLOCK_SETUP = 11, BLOCK_NOTIFY = 12, BLOCK_WAIT = 13 };
enum { OP_READ = 1, OP_WRITE = 2, OP_FLUSH = 3 };

#define SLOTS 16

struct desc { u32 op, status; u64 sector, addr, len; };
struct ring { u32 producer; u32 pad0[15]; u32 consumer; u32 pad1[15]; struct desc d[SLOTS]; };
struct info { u32 disk, flags; u64 sectors; u32 count, max_request; char name[32]; };

static void call(int n, void *arg) {
    *SLOT(n) = (u64)arg;
    __asm__ volatile("" ::: "memory");
}

static void out(const char *s, u64 len) {
    struct { u64 data, len; u32 stream, pad; u64 written; } a = { (u64)s, len, 1, 0, 0 };
    call(CONSOLE_WRITE, &a);
}

static u64 slen(const char *s) { u64 n = 0; while (s[n]) n++; return n; }
static void puts_(const char *s) { out(s, slen(s)); }

static void putnum(u64 v) {
    char b[24]; int i = 23; b[i] = 0;
    do { b[--i] = '0' + v % 10; v /= 10; } while (v);
    puts_(&b[i]);
}

static void puthex(u64 v) {
    char b[20]; int i = 19; b[i] = 0;
    do { b[--i] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    puts_(&b[i]);
}

static void halt(u32 code) {
    struct { u32 code, pad; } a = { code, 0 };
    for (;;) call(HALT, &a);
}

static u64 rdtsc(void) {
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

static u32 load_acq(volatile u32 *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static void store_rel(volatile u32 *p, u32 v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

struct state { struct ring *r; u8 *buf; u32 prod, folded, acc; u64 tsc_khz; };

/* ORs the statuses of the completed requests below `upto` into acc, once each. */
static void fold(struct state *s, u32 upto) {
    while ((int)(upto - s->folded) > 0) { s->acc |= s->r->d[s->folded % SLOTS].status; s->folded++; }
}

/* Publishes one request; notifies when the ring was empty before. */
static void submit(struct state *s, u32 op, u64 sector, u64 addr, u64 len) {
    while (s->prod - load_acq(&s->r->consumer) == SLOTS) {
        struct { u32 disk, until; u64 timeout; u32 completed, pad; } w = { 0, s->prod - SLOTS + 1, 1000000000UL, 0, 0 };
        call(BLOCK_WAIT, &w);
    }
    fold(s, s->prod - SLOTS + 1);
    struct desc *d = &s->r->d[s->prod % SLOTS];
    d->op = op; d->status = 0xffff; d->sector = sector; d->addr = addr; d->len = len;
    u32 old = s->prod++;
    store_rel(&s->r->producer, s->prod);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (load_acq(&s->r->consumer) == old) {
        struct { u32 disk, pad; } n = { 0, 0 };
        call(BLOCK_NOTIFY, &n);
    }
}

/* Waits for every published request; returns the OR of the statuses of
 * the requests since the last drain. */
static u32 drain(struct state *s) {
    while (load_acq(&s->r->consumer) != s->prod) {
        struct { u32 disk, until; u64 timeout; u32 completed, pad; } w = { 0, s->prod, 1000000000UL, 0, 0 };
        call(BLOCK_WAIT, &w);
    }
    fold(s, s->prod);
    u32 st = s->acc;
    s->acc = 0;
    return st;
}

static void setup(struct state *s, u64 *bi) {
    /* The largest free range (the last one: RAM above the image). */
    u64 n = bi[16];
    u64 base = (bi[8 + 2 * (n - 1)] + 4095) & ~4095UL;
    s->r = (struct ring *)base;
    s->buf = (u8 *)(base + 4096);
    s->prod = s->folded = s->acc = 0;
    s->tsc_khz = bi[3];
    for (int i = 0; i < SLOTS; i++) s->r->d[i].status = 0xffff;
    struct { u32 disk, slots; u64 ring; } a = { 0, SLOTS, (u64)s->r };
    call(BLOCK_SETUP, &a);
}

static void info(u64 *bi) {
    struct info in = { 0 };
    call(BLOCK_INFO, &in);
    puts_("disks "); putnum(in.count); puts_("\n");
    for (u32 i = 0; i < in.count; i++) {
        struct info d = { 0 };
        d.disk = i;
        call(BLOCK_INFO, &d);
        puts_("disk "); putnum(i); puts_(" "); out(d.name, slen(d.name) > 32 ? 32 : slen(d.name));
        puts_(" sectors "); putnum(d.sectors);
        puts_(" flags "); putnum(d.flags);
        puts_(" max "); putnum(d.max_request); puts_("\n");
    }
    /* BootInfo: disks at word 32, disks_len 33, files_addr 34, files_len 35. */
    char *decl = (char *)bi[32];
    u64 len = bi[33];
    puts_("declared ");
    for (u64 i = 0; i < len; i++) out(decl[i] ? &decl[i] : " ", 1);
    puts_("\nfiles "); puthex(bi[34]); puts_(" "); putnum(bi[35]); puts_("\n");
    halt(0);
}

static u64 sum(const u8 *p, u64 n) { u64 s = 0; for (u64 i = 0; i < n; i++) s = s * 31 + p[i]; return s; }

static void rw(struct state *s) {
    u8 *b = s->buf;
    submit(s, OP_READ, 0, (u64)b, 8 * 512);
    u32 st = drain(s);
    puts_("read status "); putnum(st);
    puts_(" sum "); puthex(sum(b, 8 * 512));
    puts_(" first "); for (int i = 0; i < 8; i++) out((char *)&b[i], 1);
    puts_("\n");
    /* Sectors 8..15: one request per sector, all in flight at once. */
    u8 *w = b + 65536;
    for (int i = 0; i < 8 * 512; i++) w[i] = (u8)(i / 512 + 'A');
    for (int i = 0; i < 8; i++) submit(s, OP_WRITE, 8 + i, (u64)(w + i * 512), 512);
    /* 1 MiB at sector 64 (the largest request). */
    u8 *big = b + (1 << 20);
    for (u64 i = 0; i < (1 << 20); i++) big[i] = (u8)(i * 7 + i / 4096);
    submit(s, OP_WRITE, 64, (u64)big, 1 << 20);
    submit(s, OP_FLUSH, 0, 0, 0);
    st = drain(s);
    puts_("write status "); putnum(st); puts_("\n");
    u8 *back = b + (4 << 20);
    submit(s, OP_READ, 64, (u64)back, 1 << 20);
    submit(s, OP_READ, 8, (u64)(back + (1 << 20)), 8 * 512);
    st = drain(s);
    int same = 1;
    for (u64 i = 0; i < (1 << 20); i++) if (back[i] != big[i]) same = 0;
    for (u64 i = 0; i < 8 * 512; i++) if (back[(1 << 20) + i] != w[i]) same = 0;
    puts_("readback status "); putnum(st); puts_(same ? " same\n" : " DIFFERENT\n");
    halt(0);
}

static void rowrite(struct state *s) {
    for (int i = 0; i < 512; i++) s->buf[i] = 'x';
    submit(s, OP_WRITE, 0, (u64)s->buf, 512);
    u32 st = drain(s);
    puts_("write status "); putnum(st); puts_("\n");
    submit(s, OP_FLUSH, 0, 0, 0);
    st = drain(s);
    puts_("flush status "); putnum(st); puts_("\n");
    submit(s, OP_READ, 0, (u64)s->buf, 512);
    st = drain(s);
    puts_("read status "); putnum(st); puts_(" first "); out((char *)s->buf, 4); puts_("\n");
    halt(0);
}

static void bench(struct state *s) {
    u8 *b = s->buf;
    const u64 chunk = 1 << 20, total = 64UL << 20;
    /* 16 distinct 1 MiB buffers, one per slot. */
    for (u64 i = 0; i < SLOTS * chunk; i++) b[i] = (u8)(i >> 20) ^ (u8)i;
    u64 t0 = rdtsc();
    for (u64 off = 0; off < total; off += chunk) {
        u64 k = (off / chunk) % SLOTS;
        submit(s, OP_WRITE, off / 512, (u64)(b + k * chunk), chunk);
    }
    submit(s, OP_FLUSH, 0, 0, 0);
    u32 st = drain(s);
    u64 t1 = rdtsc();
    for (u64 off = 0; off < total; off += chunk) {
        u64 k = (off / chunk) % SLOTS;
        submit(s, OP_READ, off / 512, (u64)(b + k * chunk), chunk);
    }
    st |= drain(s);
    u64 t2 = rdtsc();
    puts_("bench status "); putnum(st);
    puts_(" write_cycles "); putnum(t1 - t0);
    puts_(" read_cycles "); putnum(t2 - t1);
    puts_(" tsc_khz "); putnum(s->tsc_khz);
    puts_("\n");
    halt(0);
}

__attribute__((section(".text.entry"), used))
void entry(u64 *bi) {
    struct state s;
    if (MODE == 1) info(bi);
    setup(&s, bi);
    if (MODE == 2) rw(&s);
    if (MODE == 3) rowrite(&s);
    if (MODE == 9) bench(&s);
    if (MODE == 4) {
        s.r->producer = 1000;
        struct { u32 disk, pad; } n = { 0, 0 };
        call(BLOCK_NOTIFY, &n);
        struct { u32 disk, until; u64 timeout; u32 completed, pad; } w = { 0, 1000, 1000000000UL, 0, 0 };
        for (;;) call(BLOCK_WAIT, &w);
    }
    if (MODE == 5) submit(&s, OP_READ, 0, 0x7fff00000000UL, 512);
    if (MODE == 6) submit(&s, OP_READ, 1UL << 40, (u64)s.buf, 512);
    if (MODE == 7) submit(&s, OP_READ, 0, (u64)s.buf, ~0UL - 511);
    if (MODE == 10) submit(&s, 77, 0, (u64)s.buf, 512);
    if (MODE == 8) {
        /* 128 KiB: too large for block_notify to serve, so the I/O
         * thread finds it runs past the end while the guest spins. */
        submit(&s, OP_READ, 0, 0xfffff000UL, 128 << 10);
        for (volatile u64 i = 0;; i++) {} /* the monitor must kick us out */
    }
    drain(&s);
    puts_("not stopped\n");
    halt(2);
}
