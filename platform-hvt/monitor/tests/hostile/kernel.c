/* A hostile hvt guest: a tiny test kernel (built by tests/hostile.rs with
 * gcc into a flat binary, loaded as its own read-only executable segment)
 * that attacks the monitor's ABI. It runs at ring 3 with %rdi = BootInfo.
 *
 * The test patches `params` in the binary (found by its magic):
 *   mode 1, arg = N:  run attack case N (see `attack`) and, if the monitor
 *                     let the guest go on, print "survived" and halt 0;
 *   mode 2, arg = seed, count: make `count` random hypercalls (mostly
 *                     well-formed, now and then broken; block requests
 *                     whose descriptors change under the monitor's I/O
 *                     thread), print "hostile: N calls" on stderr every
 *                     256 calls and "hostile: N calls, done" at the end;
 *   mode 3, arg = ms: set up the disk's ring and the timer, serve one
 *                     request, print "idle", then sleep `ms` ms in 1 ms
 *                     polls and halt 0 (the device threads run meanwhile).
 * Before an attack it prints "case N: NAME" so that the test can check
 * that its table and this file agree. No globals: the segment is
 * read-only; all state lives on the stack and in free RAM. */
typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define MMIO 0xFFFF0000UL
enum {
    CONSOLE_WRITE = 1, CONSOLE_READ, WALL_TIME, POLL, HALT, TIMER, NET_INFO,
    NET_SETUP, NET_NOTIFY, BLOCK_INFO, BLOCK_SETUP, BLOCK_NOTIFY, BLOCK_WAIT,
    DEBUG_STOP, NCALLS = DEBUG_STOP
};

__attribute__((used)) static volatile const u64 params[4] = {
    0x454c4954534f4821UL, /* "!HOSTILE" */
    0, 0, 0,
};

static const char *const call_names[NCALLS + 1] = {
    "", "console_write", "console_read", "wall_time", "poll", "halt", "timer",
    "net_info", "net_setup", "net_notify", "block_info", "block_setup",
    "block_notify", "block_wait", "debug_stop",
};

/* Raw accesses to any guest address (the MMIO window included). */
static void put8(u64 a, u64 v) { *(volatile u64 *)a = v; __asm__ volatile("" ::: "memory"); }
static void put4(u64 a, u32 v) { *(volatile u32 *)a = v; __asm__ volatile("" ::: "memory"); }
static void put1(u64 a, u8 v) { *(volatile u8 *)a = v; __asm__ volatile("" ::: "memory"); }
static u64 get8(u64 a) { return *(volatile u64 *)a; }

static void call(int n, u64 arg) { put8(MMIO + 8 * n, arg); }

struct cw { u64 data, len; u32 stream, pad; u64 written; };

static u64 slen(const char *s) { u64 n = 0; while (s[n]) n++; return n; }
static void out(const char *s, u64 len) {
    struct cw a = { (u64)s, len, 2, 0, 0 };
    call(CONSOLE_WRITE, (u64)&a);
}
static void puts_(const char *s) { out(s, slen(s)); }
static char *fmtnum(char *end, u64 v) { do { *--end = '0' + v % 10; v /= 10; } while (v); return end; }
static void putnum(u64 v) { char b[24]; char *p = fmtnum(b + 24, v); out(p, b + 24 - p); }

static void halt(u32 code) {
    struct { u32 code, pad; u64 crash; } a = { code, 0, 0 };
    for (;;) call(HALT, (u64)&a);
}

/* The guest's view of the machine, from the BootInfo. */
struct env {
    u64 *bi;
    u64 ram;       /* RAM size: [0, ram) is guest RAM */
    u64 s;         /* scratch: the largest free range, page aligned */
    u64 s_end;
    u64 rng;
};

static u64 rnd(struct env *e) {
    u64 x = e->rng;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return e->rng = x;
}
static u64 below(struct env *e, u64 n) { return rnd(e) % n; }
static int one_in(struct env *e, u64 n) { return below(e, n) == 0; }

static void zero(u64 a, u64 n) { for (u64 i = 0; i < n; i++) ((volatile u8 *)a)[i] = 0; }

/* Scratch layout. */
#define ARGS(e) ((e)->s)                 /* argument structs */
#define RING(e) ((e)->s + 0x1000)        /* block ring (16 slots) */
#define TBLOCK(e) ((e)->s + 0x2000)      /* timer block */
#define BUFS(e) ((e)->s + 0x4000)        /* 64 KiB of data buffers */
#define BUFS_LEN 0x10000UL
#define SLOTS 16

struct ring_desc { u32 op, status; u64 sector, addr, len; };
#define R_PRODUCER(e) ((volatile u32 *)(RING(e) + 0))
#define R_CONSUMER(e) ((volatile u32 *)(RING(e) + 64))
#define R_POLLING(e) ((volatile u32 *)(RING(e) + 68))
#define R_DESC(e, i) ((volatile struct ring_desc *)(RING(e) + 128 + 32 * ((i) % SLOTS)))

static void block_setup(struct env *e, u32 disk, u32 slots, u64 ring) {
    struct { u32 disk, slots; u64 ring; } a = { disk, slots, ring };
    call(BLOCK_SETUP, (u64)&a);
}
static void block_notify(u32 disk) {
    struct { u32 disk, pad; } a = { disk, 0 };
    call(BLOCK_NOTIFY, (u64)&a);
}
static u32 block_wait(u32 disk, u32 until, u64 ns) {
    struct { u32 disk, until; u64 timeout; u32 completed, pad; } a = { disk, until, ns, 0, 0 };
    call(BLOCK_WAIT, (u64)&a);
    return a.completed;
}
/* Publishes one request at producer index p (the slot must be free). */
static void publish(struct env *e, u32 p, u32 op, u64 sector, u64 addr, u64 len) {
    volatile struct ring_desc *d = R_DESC(e, p);
    d->op = op; d->status = 0xffff; d->sector = sector; d->addr = addr; d->len = len;
    __atomic_store_n(R_PRODUCER(e), p + 1, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(R_CONSUMER(e), __ATOMIC_ACQUIRE) == p && *R_POLLING(e) == 0)
        block_notify(0);
}

static void timer_call(u64 block, u32 vector) {
    struct { u64 block, tsc0; u32 vector, pad; } a = { block, 0, vector, 0 };
    call(TIMER, (u64)&a);
}

/* ---- mode 1: one attack per boot ---- */

static const char *const case_names[] = {
    /* 0..13: call c+1 with its struct outside RAM; 14..27 straddling the
     * end of RAM; 28..41 at the top of the address space; 42..55 over the
     * BootInfo (the monitor's boot structures, as the guest sees them) */
    [56] = "console_write struct unaligned",
    "wall_time struct unaligned",
    "block_info struct unaligned",
    "halt struct unaligned",
    [60] = "console_write len u64::MAX",
    "console_write buffer wraps around",
    "console_write buffer straddles the end of RAM",
    "console_write stream 3",
    "console_read buffer outside RAM",
    "console_read len u64::MAX",
    "timer vector 0",
    "timer vector 256",
    "timer block unaligned",
    "timer block straddles the end of RAM",
    [70] = "timer fires with no handler",
    "halt crash record outside RAM",
    "halt crash record with 1000 frames",
    "net_setup with no device",
    "net_notify with no device",
    "block_info disk 0xffffffff",
    "block_setup disk 9",
    "block_setup 3 slots",
    "block_setup 512 slots",
    "block_setup ring unaligned",
    [80] = "block_setup ring straddles the end of RAM",
    "block_setup twice",
    "block_notify before block_setup",
    "block_wait before block_setup",
    "block producer 1000 ahead",
    "block desc buffer outside RAM",
    "block desc len u64::MAX",
    "block desc len 0",
    "block desc sector beyond the disk",
    "block desc sector near u64::MAX",
    [90] = "block desc op 99",
    "block desc buffer wraps around",
    "block desc changed while the monitor reads it",
    "debug_stop with no debugger",
    "mmio write to slot 0",
    "mmio write to slot 200",
    "mmio write to an unaligned address",
    "mmio 1-byte write to a slot",
    "mmio 4-byte write to a slot",
    "mmio read of a slot",
    [100] = "mmio read of an unknown address",
    "write past the mmio window",
    "port output",
    "port input",
    "hlt",
    "wiped idt then ud2",
    "cli",
    "write to the kernel's code",
    "jump outside RAM",
    "net_info with no device",
    [110] = "wall_time over the page tables",
    "block_wait for 2^31 completions",
    "net tx desc changed while the monitor reads it",
    0,
};

#define NCASES (sizeof case_names / sizeof case_names[0] - 1)

static void print_case(u64 n) {
    if (n >= NCASES) { puts_("no such case\n"); halt(3); }
    const char *name = n < 56 ? call_names[n % 14 + 1] : case_names[n];
    puts_("case "); putnum(n); puts_(": ");
    puts_(name);
    if (n < 56) {
        static const char *const where[] = {
            " args outside RAM", " args straddle the end of RAM",
            " args at the top of the address space", " args over the BootInfo",
        };
        puts_(where[n / 14]);
    }
    puts_("\n");
}

/* A disk with a ring set up, for the ring cases. */
static void ring_up(struct env *e) {
    zero(RING(e), 128 + 32 * SLOTS);
    block_setup(e, 0, SLOTS, RING(e));
}

void entry(u64 *bi);

/* 20,000 tx frames whose buffer address flips between a valid buffer and
 * one 32 bytes below the end of RAM (the frame is 60 bytes) while the
 * monitor's network I/O thread reads the descriptors (needs --net). */
static void net_race(struct env *e) {
    struct { u32 flags, mtu; u8 mac[8]; } info = { 0, 0, { 0 } };
    call(NET_INFO, (u64)&info);
    if (!(info.flags & 1)) { puts_("no network device\n"); halt(3); }
    u64 buf = (info.mtu + 14 + 2047) & ~2047UL;
    u64 rx = e->s + 0x20000, tx = rx + 0x1000, bufs = rx + 0x2000, txbufs = bufs + SLOTS * buf;
    if (txbufs + SLOTS * buf > e->s_end) { puts_("too little free RAM\n"); halt(3); }
    zero(rx, 0x2000);
    for (u64 i = 0; i < SLOTS; i++) put8(rx + 128 + 16 * i, bufs + i * buf);
    for (u64 i = 0; i < SLOTS; i++) {
        u64 f = txbufs + i * buf;
        zero(f, 60);
        for (int j = 0; j < 6; j++) put1(f + j, 0xff);
        put1(f + 12, 0x88); put1(f + 13, 0xb5);
    }
    struct { u64 rx, tx; u32 slots, buf; } a = { rx, tx, SLOTS, (u32)buf };
    call(NET_SETUP, (u64)&a);
    volatile u32 *producer = (volatile u32 *)tx, *consumer = (volatile u32 *)(tx + 64);
    volatile u32 *polling = (volatile u32 *)(tx + 68);
    for (u32 p = 0; p < 20000; p++) {
        while (p - __atomic_load_n(consumer, __ATOMIC_ACQUIRE) >= SLOTS) {}
        volatile u64 *d = (volatile u64 *)(tx + 128 + 16 * (p % SLOTS));
        u64 good = txbufs + (p % SLOTS) * buf;
        d[0] = good;
        d[1] = 60;
        __atomic_store_n(producer, p + 1, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (__atomic_load_n(consumer, __ATOMIC_ACQUIRE) == p && *polling == 0) call(NET_NOTIFY, (u64)&a);
        for (int k = 0; k < 64; k++) d[0] = (k & 1) ? e->ram - 32 : good;
        d[0] = good;
    }
    while (__atomic_load_n(consumer, __ATOMIC_ACQUIRE) != 20000) {
        struct { u64 timeout, ready; } w = { 1000000, 0 };
        call(POLL, (u64)&w);
    }
}

static void attack(struct env *e, u64 n) {
    u64 a = ARGS(e), ram = e->ram;
    zero(a, 256);
    if (n < 56) {
        static const u64 spot_off[3] = { 0x1000, (u64)-4, 0 };
        u64 spot;
        if (n < 14) spot = ram + spot_off[0];
        else if (n < 28) spot = ram + spot_off[1];
        else if (n < 42) spot = 0xfffffffffffffffcUL;
        else spot = (u64)e->bi;
        call(n % 14 + 1, spot);
        return;
    }
    struct cw *w = (struct cw *)a;
    static const char msg[] = "unaligned ok\n";
    switch (n) {
    case 56: {
        u64 p = a + 3;
        put8(p, (u64)msg); put8(p + 8, sizeof msg - 1); put4(p + 16, 2); put4(p + 20, 0);
        call(CONSOLE_WRITE, p);
        return;
    }
    case 57: call(WALL_TIME, a + 5); return;
    case 58: call(BLOCK_INFO, a + 1); return;
    case 59: put4(a + 7, 42); call(HALT, a + 7); return;
    case 60: w->data = (u64)msg; w->len = ~0UL; w->stream = 2; break;
    case 61: w->data = 0xfffffffffffffff0UL; w->len = 0x20; w->stream = 2; break;
    case 62: w->data = ram - 4; w->len = 8; w->stream = 2; break;
    case 63: w->data = (u64)msg; w->len = 4; w->stream = 3; break;
    case 64: case 65:
        w->data = n == 64 ? ram + 0x10000 : BUFS(e);
        w->len = n == 64 ? 16 : ~0UL;
        call(CONSOLE_READ, a);
        return;
    case 66: timer_call(TBLOCK(e), 0); return;
    case 67: timer_call(TBLOCK(e), 256); return;
    case 68: timer_call(TBLOCK(e) + 4, 40); return;
    case 69: timer_call(ram - 16, 40); return;
    case 70:
        zero(TBLOCK(e), 32); /* deadline 0: already passed */
        put8(TBLOCK(e) + 8, ~0UL);
        timer_call(TBLOCK(e), 40);
        for (;;) {} /* the interrupt arrives; its IDT gate leads to hlt */
    case 71: case 72: {
        u64 rec = BUFS(e);
        zero(rec, 320);
        put4(rec, 1); put4(rec + 8, 1000);
        put4(a, 7); put4(a + 4, 0); put8(a + 8, n == 71 ? ram + 0x100000 : rec);
        call(HALT, a);
        return;
    }
    case 73:
        put8(a, BUFS(e)); put8(a + 8, BUFS(e) + 0x2000); put4(a + 16, 16); put4(a + 20, 2048);
        call(NET_SETUP, a);
        return;
    case 74: call(NET_NOTIFY, a); return;
    case 75: put4(a, 0xffffffff); call(BLOCK_INFO, a); return;
    case 76: block_setup(e, 9, SLOTS, RING(e)); return;
    case 77: block_setup(e, 0, 3, RING(e)); return;
    case 78: block_setup(e, 0, 512, RING(e)); return;
    case 79: block_setup(e, 0, SLOTS, RING(e) + 8); return;
    case 80: block_setup(e, 0, SLOTS, ram - 128); return;
    case 81: ring_up(e); ring_up(e); return;
    case 82: block_notify(0); return;
    case 83: block_wait(0, 1, 1000); return;
    case 84:
        ring_up(e);
        __atomic_store_n(R_PRODUCER(e), 1000, __ATOMIC_RELEASE);
        block_notify(0);
        for (;;) block_wait(0, 1000, 100000000UL);
    case 85: case 86: case 87: case 88: case 89: case 90: case 91: {
        u32 op = 1; u64 sector = 0, addr = BUFS(e), len = 512;
        if (n == 85) addr = ram + 0x100000;
        if (n == 86) len = ~0UL;
        if (n == 87) len = 0;
        if (n == 88) sector = 1UL << 40;
        if (n == 89) sector = 0xfffffffffffffff0UL;
        if (n == 90) op = 99;
        if (n == 91) { addr = 0xfffffffffffffe00UL; len = 0x400; }
        ring_up(e);
        publish(e, 0, op, sector, addr, len);
        for (;;) block_wait(0, 1, 100000000UL);
    }
    case 92: {
        /* Publish requests whose length flips between a valid 512 and an
         * invalid 1 MiB running off the end of RAM, while the monitor's I/O
         * thread reads them: the monitor must check and use one read of
         * each field. Ends with the monitor stopping us or all served. */
        ring_up(e);
        u64 buf = ram - 4096;
        for (u32 p = 0; p < 20000; p++) {
            while (p - __atomic_load_n(R_CONSUMER(e), __ATOMIC_ACQUIRE) >= SLOTS) {}
            publish(e, p, 1, p % 64, buf, 512);
            volatile struct ring_desc *d = R_DESC(e, p);
            for (int k = 0; k < 64; k++) { d->len = (k & 1) ? 1UL << 20 : 512; }
            d->len = 512;
        }
        while (__atomic_load_n(R_CONSUMER(e), __ATOMIC_ACQUIRE) != 20000) block_wait(0, 20000, 1000000);
        return;
    }
    case 93: call(DEBUG_STOP, a); return;
    case 94: put8(MMIO, a); return;
    case 95: put8(MMIO + 8 * 200, a); return;
    case 96: put8(MMIO + 9, a); return;
    case 97: put1(MMIO + 8 * CONSOLE_WRITE, 0); return;
    case 98: put4(MMIO + 8 * CONSOLE_WRITE, (u32)a); return;
    case 99: get8(MMIO + 8 * WALL_TIME); return;
    case 100: get8(MMIO + 0x800); return;
    case 101: put8(MMIO + 0x10000, a); return;
    case 102: __asm__ volatile("outb %%al, $0x80" :: "a"(0)); return;
    case 103: { u8 v; __asm__ volatile("inb $0x64, %0" : "=a"(v)); return; }
    case 104: __asm__ volatile("hlt"); return;
    case 105: {
        struct { u16 limit; u64 base; } __attribute__((packed)) idt;
        __asm__ volatile("sidt %0" : "=m"(idt));
        for (u64 i = 0; i <= idt.limit; i += 8) put8(idt.base + i, 0);
        __asm__ volatile("ud2");
        return;
    }
    case 106: __asm__ volatile("cli"); return;
    case 107: put1((u64)&entry, 0xcc); return;
    case 108: ((void (*)(void))(ram + 0x200000))(); return;
    case 109: call(NET_INFO, a); puts_(get8(a) & 1 ? "net attached\n" : "no net\n"); return;
    case 110: call(WALL_TIME, e->bi[7]); return;
    case 111: ring_up(e); block_wait(0, 0x80000000u, 1000000); return;
    case 112: net_race(e); return;
    default: puts_("no such case\n"); halt(3);
    }
    call(CONSOLE_WRITE, a);
}

/* ---- mode 2: random calls ---- */

/* An address no argument may have (outside RAM, straddling its end, near
 * the top, in the MMIO window). */
static u64 bad_addr(struct env *e) {
    switch (below(e, 5)) {
    case 0: return e->ram + below(e, 1UL << 32);
    case 1: return e->ram - below(e, 8);
    case 2: return ~0UL - below(e, 64);
    case 3: return MMIO + below(e, 0x1000);
    default: return rnd(e);
    }
}
/* A pointer into the data buffers, now and then a bad one. */
static u64 some_buf(struct env *e, u64 len) {
    if (one_in(e, 4000)) return bad_addr(e);
    return BUFS(e) + below(e, BUFS_LEN - len + 1);
}
static u64 some_len(struct env *e, u64 max) {
    if (one_in(e, 4000)) return ~0UL - below(e, 4096);
    return below(e, max + 1);
}

struct rstate { u32 p, done; u64 sectors; int disk; };

static void random_block_request(struct env *e, struct rstate *r) {
    if (r->p - r->done >= SLOTS) r->done = block_wait(0, r->p - SLOTS + 1, 1000000000UL);
    if (r->p - r->done >= SLOTS) return;
    u32 op = 1 + below(e, 3);
    u64 len = 512 * (1 + below(e, 8));
    u64 sector = below(e, r->sectors - 8);
    u64 addr = some_buf(e, len);
    if (one_in(e, 4000)) op = rnd(e);
    if (one_in(e, 4000)) sector = rnd(e);
    if (one_in(e, 4000)) len = rnd(e);
    publish(e, r->p, op, sector, addr, len);
    volatile struct ring_desc *d = R_DESC(e, r->p);
    r->p++;
    /* Change the request under the monitor's I/O thread, to other valid values. */
    if (one_in(e, 4)) {
        for (int k = below(e, 32); k > 0; k--) {
            d->len = 512 * (1 + below(e, 8));
            d->addr = BUFS(e) + below(e, BUFS_LEN - 4096);
            d->op = 1 + below(e, 3);
        }
    }
    /* Scribble on the monitor's own words; it never reads them back. */
    if (one_in(e, 64)) *R_CONSUMER(e) = rnd(e);
    if (one_in(e, 64)) *R_POLLING(e) = rnd(e);
}

static void random_call(struct env *e, struct rstate *r) {
    u64 a = ARGS(e) + below(e, 0xf00);
    u64 pick = below(e, 100);
    int c;
    zero(a, 64);
    if (pick < 15) {
        c = CONSOLE_WRITE;
        u64 len = some_len(e, 16);
        put8(a, some_buf(e, len < BUFS_LEN ? len : 0)); put8(a + 8, len);
        put4(a + 16, one_in(e, 4000) ? rnd(e) : 1);
    } else if (pick < 20) {
        c = CONSOLE_READ;
        u64 len = some_len(e, 64);
        put8(a, some_buf(e, len < BUFS_LEN ? len : 0)); put8(a + 8, len);
    } else if (pick < 35) {
        c = WALL_TIME;
    } else if (pick < 38) {
        c = POLL;
        put8(a, below(e, 2000));
    } else if (pick < 40) {
        c = TIMER;
        u64 blk = TBLOCK(e);
        if (one_in(e, 4000)) blk = bad_addr(e);
        put8(a, blk); put8(a + 8, rnd(e)); put4(a + 16, one_in(e, 4000) ? rnd(e) : 32 + below(e, 224));
        /* Now and then a deadline that passes: the interrupt has no handler. */
        put8(TBLOCK(e), one_in(e, 4000) ? rnd(e) >> 8 : ~0UL);
    } else if (pick < 45) {
        c = NET_INFO;
    } else if (pick < 55) {
        c = BLOCK_INFO;
        put4(a, one_in(e, 2) ? below(e, 12) : rnd(e));
    } else if (pick < 65) {
        c = BLOCK_NOTIFY;
        put4(a, one_in(e, 4000) ? 1 + below(e, 8) : 0);
    } else if (pick < 72) {
        c = BLOCK_WAIT;
        put4(a, one_in(e, 4000) ? 1 + below(e, 8) : 0);
        put4(a + 4, r->done + below(e, 3));
        put8(a + 8, below(e, 20000));
    } else if (pick < 77) {
        c = DEBUG_STOP;
        for (int i = 0; i < 24; i++) put8(a + 8 * i, rnd(e));
    } else {
        random_block_request(e, r);
        return;
    }
    /* Rarely: a call that is wrong by design. */
    if (one_in(e, 4000)) {
        switch (below(e, 6)) {
        case 0: c = NET_SETUP; break;
        case 1: c = BLOCK_SETUP; put4(a, 0); put4(a + 4, SLOTS); put8(a + 8, RING(e)); break;
        case 2: put8(MMIO + 8 * (15 + below(e, 400)), a); return;
        case 3: put4(MMIO + 8 * c, (u32)a); return;
        case 4: get8(MMIO + 8 * c); return;
        default: a = bad_addr(e); break;
        }
    }
    call(c, a);
}

static void progress(u64 n, int done) {
    char b[64], t[24];
    u64 k = 0;
    for (const char *h = "hostile: "; *h; h++) b[k++] = *h;
    for (char *p = fmtnum(t + 24, n); p < t + 24; p++) b[k++] = *p;
    for (const char *h = done ? " calls, done\n" : " calls\n"; *h; h++) b[k++] = *h;
    out(b, k);
}

static void random_mode(struct env *e, u64 seed, u64 count) {
    e->rng = seed * 0x9e3779b97f4a7c15UL + 1;
    for (u64 i = 0; i < BUFS_LEN; i += 8) put8(BUFS(e) + i, rnd(e));
    struct rstate r = { 0, 0, 0, 0 };
    u64 *info = (u64 *)(ARGS(e) + 0xf00);
    zero((u64)info, 56);
    call(BLOCK_INFO, (u64)info);
    if (!(info[0] >> 32 & 1) || info[1] < 64) { puts_("random mode needs a disk of 32 KiB or more\n"); halt(3); }
    r.sectors = info[1];
    ring_up(e);
    for (u64 n = 0; n < count; n++) {
        if (n % 256 == 0) progress(n, 0);
        random_call(e, &r);
    }
    progress(count, 1);
    halt(0);
}

static void idle(struct env *e, u64 ms) {
    ring_up(e);
    zero(TBLOCK(e), 32);
    put8(TBLOCK(e), ~0UL); /* no deadline */
    timer_call(TBLOCK(e), 40);
    publish(e, 0, 1, 0, BUFS(e), 512);
    while (block_wait(0, 1, 1000000000UL) != 1) {}
    puts_("idle\n");
    for (u64 i = 0; i < ms; i++) {
        struct { u64 timeout, ready; } a = { 1000000, 0 };
        call(POLL, (u64)&a);
    }
    halt(0);
}

__attribute__((section(".text.entry"), used))
void entry(u64 *bi) {
    struct env e;
    e.bi = bi;
    e.ram = bi[2];
    u64 n = bi[16];
    e.s = (bi[8 + 2 * (n - 1)] + 4095) & ~4095UL;
    e.s_end = bi[9 + 2 * (n - 1)];
    e.rng = 1;
    if (e.s_end - e.s < 0x80000) { puts_("too little free RAM\n"); halt(3); }
    if (params[1] == 1) {
        print_case(params[2]);
        attack(&e, params[2]);
        puts_("survived\n");
        halt(0);
    }
    if (params[1] == 2) random_mode(&e, params[2], params[3]);
    if (params[1] == 3) idle(&e, params[2]);
    puts_("unknown mode\n");
    halt(3);
}
