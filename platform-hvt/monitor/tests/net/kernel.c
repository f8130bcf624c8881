/* A tiny hvt test kernel for the network device tests, built by the test
 * with gcc into a flat binary at the kernel's entry. It runs at ring 3 with
 * %rdi = BootInfo and talks to the monitor only through hypercalls (8-byte
 * MMIO writes of an argument struct's address). MODE selects what it does:
 *   1 echo:     echo every frame back (MACs swapped) until a frame of
 *               ethertype 0x88b5 whose first payload byte is 0xff
 *   2 dhcp:     broadcast a DHCP DISCOVER, wait for the OFFER
 *   3 badindex: publish a tx producer index far beyond the ring size
 *   4 baddesc:  publish a tx descriptor whose buffer lies outside RAM
 *   5 info:     print whether a device is attached
 *   6 syn:      broadcast a DHCP DISCOVER (so passt learns our MAC), then
 *               wait for a TCP SYN and print its destination port
 * No globals: the image's only segment is read-only; all state lives on
 * the stack and in a free RAM range from the BootInfo. */
typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define SLOT(n) ((volatile u64 *)(0xFFFF0000UL + 8 * (n)))
enum { CONSOLE_WRITE = 1, POLL = 4, HALT = 5, NET_INFO = 7, NET_SETUP = 8, NET_NOTIFY = 9 };

#define SLOTS 256
#define BUF 2048

struct desc { u64 addr; u32 len; u32 pad; };
struct ring { u32 producer; u32 pad0[15]; u32 consumer; u32 pad1[15]; struct desc d[SLOTS]; };

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

static void halt(u32 code) {
    struct { u32 code, pad; } a = { code, 0 };
    for (;;) call(HALT, &a);
}

static u64 poll_(u64 ns) {
    struct { u64 timeout, ready; } a = { ns, 0 };
    call(POLL, &a);
    return a.ready;
}

static void copy(u8 *d, const u8 *s, u32 n) { for (u32 i = 0; i < n; i++) d[i] = s[i]; }

static u32 load_acq(volatile u32 *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static void store_rel(volatile u32 *p, u32 v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

struct state { struct ring *rx, *tx; u8 *rxbuf, *txbuf; u32 rxc, txp; u8 mac[6]; };

/* Publishes one tx frame (already in txbuf slot of txp); notifies when the
 * ring was empty before. */
static void tx_publish(struct state *s, u32 len) {
    struct desc *d = &s->tx->d[s->txp % SLOTS];
    d->addr = (u64)(s->txbuf + (s->txp % SLOTS) * BUF);
    d->len = len;
    u32 old = s->txp++;
    store_rel(&s->tx->producer, s->txp);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (load_acq(&s->tx->consumer) == old) {
        u64 dummy = 0;
        call(NET_NOTIFY, &dummy);
    }
}

static u8 *tx_slot(struct state *s) {
    while (s->txp - load_acq(&s->tx->consumer) == SLOTS) poll_(1000000);
    return s->txbuf + (s->txp % SLOTS) * BUF;
}

static void setup(struct state *s, u64 *bi) {
    struct { u32 flags, mtu; u8 mac[8]; } info = { 0, 0, {0} };
    call(NET_INFO, &info);
    if (MODE == 5) {
        puts_(info.flags & 1 ? "attached mtu " : "not attached mtu ");
        putnum(info.mtu);
        puts_("\n");
        halt(0);
    }
    if (!(info.flags & 1)) { puts_("no device\n"); halt(3); }
    copy(s->mac, info.mac, 6);
    /* The largest free range (the last one: RAM above the image). */
    u64 n = bi[16];
    u64 base = (bi[8 + 2 * (n - 1)] + 4095) & ~4095UL;
    s->rx = (struct ring *)base;
    s->tx = (struct ring *)(base + 8192);
    s->rxbuf = (u8 *)(base + 16384);
    s->txbuf = s->rxbuf + SLOTS * BUF;
    for (int i = 0; i < SLOTS; i++) s->rx->d[i].addr = (u64)(s->rxbuf + i * BUF);
    s->rxc = s->txp = 0;
    struct { u64 rx, tx; u32 slots, buf; } a = { (u64)s->rx, (u64)s->tx, SLOTS, BUF };
    call(NET_SETUP, &a);
}

static void echo(struct state *s) {
    u64 frames = 0;
    for (;;) {
        u32 p = load_acq(&s->rx->producer);
        if (p == s->rxc) { poll_(5000000000UL); continue; }
        while (s->rxc != p) {
            struct desc *d = &s->rx->d[s->rxc % SLOTS];
            u8 *f = (u8 *)d->addr;
            u32 len = d->len;
            u8 *o = tx_slot(s);
            copy(o, f + 6, 6);
            copy(o + 6, s->mac, 6);
            copy(o + 12, f + 12, len - 12);
            int last = f[12] == 0x88 && f[13] == 0xb5 && f[14] == 0xff;
            s->rxc++;
            store_rel(&s->rx->consumer, s->rxc);
            tx_publish(s, len);
            frames++;
            if (last) {
                /* Let the monitor send the last echo before halting. */
                while (load_acq(&s->tx->consumer) != s->txp) poll_(1000000);
                puts_("echoed ");
                putnum(frames);
                puts_(" frames\n");
                halt(0);
            }
        }
    }
}

static u16 csum(const u8 *p, u32 n) {
    u32 sum = 0;
    for (u32 i = 0; i + 1 < n; i += 2) sum += (p[i] << 8) | p[i + 1];
    if (n & 1) sum += p[n - 1] << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

static void send_discover(struct state *s) {
    u8 *f = tx_slot(s);
    for (int i = 0; i < 342; i++) f[i] = 0;
    for (int i = 0; i < 6; i++) f[i] = 0xff;
    copy(f + 6, s->mac, 6);
    f[12] = 0x08; f[13] = 0x00;
    u8 *ip = f + 14;
    ip[0] = 0x45; ip[2] = (328 >> 8); ip[3] = 328 & 0xff; ip[8] = 64; ip[9] = 17;
    ip[16] = ip[17] = ip[18] = ip[19] = 0xff;
    u16 c = csum(ip, 20); ip[10] = c >> 8; ip[11] = c & 0xff;
    u8 *udp = ip + 20;
    udp[1] = 68; udp[3] = 67; udp[4] = 308 >> 8; udp[5] = 308 & 0xff;
    u8 *b = udp + 8;
    b[0] = 1; b[1] = 1; b[2] = 6;
    b[4] = 0x12; b[5] = 0x34; b[6] = 0x56; b[7] = 0x78; /* xid */
    b[10] = 0x80; /* broadcast flag */
    copy(b + 28, s->mac, 6);
    b[236] = 99; b[237] = 130; b[238] = 83; b[239] = 99; /* magic cookie */
    b[240] = 53; b[241] = 1; b[242] = 1; /* DISCOVER */
    b[243] = 255;
    tx_publish(s, 342);
}

/* Waits (10 s at most) for a TCP SYN; prints its destination port. */
static void syn(struct state *s) {
    send_discover(s);
    for (int tries = 0; tries < 100; tries++) {
        u32 p = load_acq(&s->rx->producer);
        if (p == s->rxc) { poll_(100000000UL); continue; }
        while (s->rxc != p) {
            struct desc *d = &s->rx->d[s->rxc % SLOTS];
            u8 *r = (u8 *)d->addr;
            u32 len = d->len;
            s->rxc++;
            store_rel(&s->rx->consumer, s->rxc);
            if (len < 54 || r[12] != 0x08 || r[13] != 0x00 || r[23] != 6) continue;
            u8 *tcp = r + 14 + (r[14] & 15) * 4;
            if (!(tcp[13] & 0x02)) continue;
            puts_("syn to port ");
            putnum((tcp[2] << 8) | tcp[3]);
            puts_("\n");
            halt(0);
        }
    }
    puts_("no syn\n");
    halt(1);
}

static void dhcp(struct state *s) {
    send_discover(s);
    for (int tries = 0; tries < 100; tries++) {
        u32 p = load_acq(&s->rx->producer);
        if (p == s->rxc) { poll_(100000000UL); continue; }
        while (s->rxc != p) {
            struct desc *d = &s->rx->d[s->rxc % SLOTS];
            u8 *r = (u8 *)d->addr;
            u32 len = d->len;
            s->rxc++;
            store_rel(&s->rx->consumer, s->rxc);
            if (len < 14 + 20 + 8 + 244 || r[12] != 0x08 || r[13] != 0x00 || r[23] != 17) continue;
            u8 *rb = r + 14 + (r[14] & 15) * 4 + 8;
            if (rb[0] != 2 || rb[4] != 0x12 || rb[7] != 0x78) continue;
            u32 blen = len - 14 - (r[14] & 15) * 4 - 8;
            u32 o = 240;
            while (o + 2 < blen && rb[o] != 255) {
                if (rb[o] == 0) { o++; continue; }
                if (rb[o] == 53 && rb[o + 2] == 2) {
                    puts_("offer ");
                    for (int i = 0; i < 4; i++) { putnum(rb[16 + i]); puts_(i < 3 ? "." : "\n"); }
                    halt(0);
                }
                o += 2 + rb[o + 1];
            }
        }
    }
    puts_("no offer\n");
    halt(1);
}

__attribute__((section(".text.entry"), used))
void entry(u64 *bi) {
    struct state s;
    setup(&s, bi);
    if (MODE == 1) echo(&s);
    if (MODE == 2) dhcp(&s);
    if (MODE == 6) syn(&s);
    if (MODE == 3) {
        s.tx->producer = 1000;
        u64 dummy = 0;
        call(NET_NOTIFY, &dummy);
        for (;;) poll_(1000000000UL);
    }
    if (MODE == 4) {
        s.tx->d[0].addr = 0x7fff00000000UL;
        s.tx->d[0].len = 60;
        store_rel(&s.tx->producer, 1);
        u64 dummy = 0;
        call(NET_NOTIFY, &dummy);
        for (volatile u64 i = 0;; i++) {} /* spin: the monitor must kick us out */
    }
    halt(2);
}
