/*
 * test_native.c - tests of libuvm.so on the real host (no mocks).
 *
 * Each case prints one line ("pass NAME", "FAIL NAME: why" or "skip NAME: why");
 * the last line is "native: N passed, N failed, N skipped"; the exit status is
 * non-zero iff a case failed. Cases that need a fresh process (an action installed
 * before uvm_install, or a death by signal) re-execute this binary as
 * "test_native --child NAME" and judge its exit status and output.
 * A throughput table of uvm_copy vs memcpy is printed at the end (never asserted).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "uvm.h"

/* ------------------------------------------------------------------ harness */

enum result { PASS, FAIL, SKIP };

static size_t PG;
static char why[1024];
static int npass, nfail, nskip;

#define FAILF(...)                                   \
    do {                                             \
        snprintf(why, sizeof why, __VA_ARGS__);      \
        return FAIL;                                 \
    } while (0)
#define EXPECT(c)                                    \
    do {                                             \
        if (!(c))                                    \
            FAILF("line %d: %s", __LINE__, #c);      \
    } while (0)
#define EXPECT_EQ(a, b)                                                                        \
    do {                                                                                       \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);         \
        if (a_ != b_)                                                                          \
            FAILF("line %d: %s == %s: got 0x%llx, want 0x%llx", __LINE__, #a, #b, a_, b_);     \
    } while (0)
#define TRY(e)                                       \
    do {                                             \
        enum result r_ = (e);                        \
        if (r_ != PASS)                              \
            return r_;                               \
    } while (0)

static void run(const char *name, enum result (*fn)(void))
{
    why[0] = 0;
    enum result r = fn();
    if (r == PASS) {
        npass++;
        printf("pass %s\n", name);
    } else if (r == FAIL) {
        nfail++;
        printf("FAIL %s: %s\n", name, why);
    } else {
        nskip++;
        printf("skip %s: %s\n", name, why);
    }
    fflush(stdout);
}

/* ------------------------------------------------------------------ memory */

#define CANARY 0xA5
#define UNTOUCHED 0xEE /* what a struct uvm_fault holds before a call */

static uint8_t pat(size_t i) { return (uint8_t)(0x10 + (i * 37) % 0x80); } /* never CANARY */

static uint8_t *map_rw(size_t pages)
{
    void *p = mmap(NULL, pages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        abort();
    }
    return p;
}

static void unmap(void *p, size_t pages) { munmap(p, pages * PG); }

static void protect(void *p, size_t pages, int prot)
{
    if (mprotect(p, pages * PG, prot) != 0) {
        perror("mprotect");
        abort();
    }
}

/* How the bad page of a case is made inaccessible. */
enum bad { BAD_NONE, BAD_READONLY, BAD_HOLE };

static void make_bad(uint8_t *page, enum bad kind)
{
    if (kind == BAD_HOLE)
        munmap(page, PG);
    else
        protect(page, 1, kind == BAD_NONE ? PROT_NONE : PROT_READ);
}

static int expected_code(enum bad kind) { return kind == BAD_HOLE ? SEGV_MAPERR : SEGV_ACCERR; }

static void fault_reset(struct uvm_fault *f) { memset(f, UNTOUCHED, sizeof *f); }

static int fault_untouched(const struct uvm_fault *f)
{
    const uint8_t *b = (const uint8_t *)f;
    for (size_t i = 0; i < sizeof *f; i++)
        if (b[i] != UNTOUCHED)
            return 0;
    return 1;
}

static enum result expect_fault(const struct uvm_fault *f, const void *addr, int signo, int access,
                                int code)
{
    EXPECT_EQ(f->addr, (uintptr_t)addr);
    EXPECT_EQ(f->signo, signo);
    EXPECT_EQ(f->access, access);
    EXPECT_EQ(f->code, code);
    EXPECT_EQ(f->reserved, 0);
    return PASS;
}

/* First index in [from, to) where p[i] != v, or to. */
static size_t first_not(const uint8_t *p, size_t from, size_t to, uint8_t v)
{
    for (size_t i = from; i < to; i++)
        if (p[i] != v)
            return i;
    return to;
}

/* Lengths beyond the last accessible byte and the accessible bytes before a bad page. */
static const size_t extras[] = { 1, 2, 7, 13, 64, 300, 1500, 4096, 4099 };
static size_t avails[15];
static void init_avails(void)
{
    size_t a[] = { 0, 1, 3, 8, 17, 63, 100, 500, PG - 1, PG, PG + 1, 2 * PG - 5, 2 * PG, 3 * PG - 7, 3 * PG };
    memcpy(avails, a, sizeof a);
}
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define GOOD 3 /* accessible pages before the bad one */

/* ------------------------------------------------------------------ copy / fill */

/* Copy len bytes from `avail` bytes before a bad page of src into dst + dst_off. */
static enum result copy_read_fault_one(enum bad kind, size_t avail, size_t len, size_t dst_off)
{
    uint8_t *src = map_rw(GOOD + 2);
    for (size_t i = 0; i < (GOOD + 2) * PG; i++)
        src[i] = pat(i);
    size_t dpages = (dst_off + len + 64) / PG + 1;
    uint8_t *dst = map_rw(dpages);
    memset(dst, CANARY, dpages * PG);
    uint8_t *bad = src + GOOD * PG;
    uint8_t *s = bad - avail;
    make_bad(bad, kind);

    struct uvm_fault f;
    fault_reset(&f);
    uint64_t left = uvm_copy(dst + dst_off, s, len, &f);
    size_t done = len < avail ? len : avail;
    EXPECT_EQ(left, len - done);
    EXPECT(memcmp(dst + dst_off, s, done) == 0);
    EXPECT_EQ(first_not(dst, 0, dst_off, CANARY), dst_off);
    EXPECT_EQ(first_not(dst, dst_off + done, dpages * PG, CANARY), dpages * PG);
    if (done < len)
        TRY(expect_fault(&f, bad, SIGSEGV, UVM_ACCESS_READ, expected_code(kind)));
    else
        EXPECT(fault_untouched(&f));
    unmap(src, GOOD + 2);
    unmap(dst, dpages);
    return PASS;
}

/* Copy len bytes from src + src_off to `avail` bytes before a bad page of dst. */
static enum result copy_write_fault_one(enum bad kind, size_t avail, size_t len, size_t src_off)
{
    uint8_t *dst = map_rw(GOOD + 2);
    memset(dst, CANARY, (GOOD + 2) * PG);
    size_t spages = (src_off + len) / PG + 1;
    uint8_t *src = map_rw(spages);
    for (size_t i = 0; i < spages * PG; i++)
        src[i] = pat(i);
    uint8_t *bad = dst + GOOD * PG;
    uint8_t *d = bad - avail;
    make_bad(bad, kind);

    struct uvm_fault f;
    fault_reset(&f);
    uint64_t left = uvm_copy(d, src + src_off, len, &f);
    size_t done = len < avail ? len : avail;
    EXPECT_EQ(left, len - done);
    EXPECT(memcmp(d, src + src_off, done) == 0);
    EXPECT_EQ(first_not(dst, 0, GOOD * PG - avail, CANARY), GOOD * PG - avail);
    EXPECT_EQ(first_not(dst, GOOD * PG - avail + done, GOOD * PG, CANARY), GOOD * PG);
    if (kind == BAD_READONLY)
        EXPECT_EQ(first_not(bad, 0, PG, CANARY), PG);
    if (done < len)
        TRY(expect_fault(&f, bad, SIGSEGV, UVM_ACCESS_WRITE, expected_code(kind)));
    else
        EXPECT(fault_untouched(&f));
    if (kind == BAD_HOLE)
        munmap(dst, GOOD * PG), munmap(bad + PG, PG);
    else
        unmap(dst, GOOD + 2);
    unmap(src, spages);
    return PASS;
}

/* Zero len bytes from `avail` bytes before a bad page. */
static enum result fill_fault_one(enum bad kind, size_t avail, size_t len)
{
    uint8_t *dst = map_rw(GOOD + 2);
    memset(dst, CANARY, (GOOD + 2) * PG);
    uint8_t *bad = dst + GOOD * PG;
    uint8_t *d = bad - avail;
    make_bad(bad, kind);

    struct uvm_fault f;
    fault_reset(&f);
    uint64_t left = uvm_fill_zero(d, len, &f);
    size_t done = len < avail ? len : avail;
    EXPECT_EQ(left, len - done);
    EXPECT_EQ(first_not(d, 0, done, 0), done);
    EXPECT_EQ(first_not(dst, 0, GOOD * PG - avail, CANARY), GOOD * PG - avail);
    EXPECT_EQ(first_not(dst, GOOD * PG - avail + done, GOOD * PG, CANARY), GOOD * PG);
    if (kind == BAD_READONLY)
        EXPECT_EQ(first_not(bad, 0, PG, CANARY), PG);
    if (done < len)
        TRY(expect_fault(&f, bad, SIGSEGV, UVM_ACCESS_WRITE, expected_code(kind)));
    else
        EXPECT(fault_untouched(&f));
    if (kind == BAD_HOLE)
        munmap(dst, GOOD * PG), munmap(bad + PG, PG);
    else
        unmap(dst, GOOD + 2);
    return PASS;
}

/* For each accessible prefix: lengths that stop short, end at the boundary, and run past it. */
#define FOR_EACH_LEN(avail, len, body)                                     \
    for (size_t ai_ = 0; ai_ < NELEM(avails); ai_++) {                    \
        size_t avail = avails[ai_];                                         \
        size_t lens_[NELEM(extras) + 2];                                    \
        size_t nl_ = 0;                                                     \
        if (avail > 0)                                                      \
            lens_[nl_++] = avail - 1;                                       \
        lens_[nl_++] = avail;                                               \
        for (size_t ei_ = 0; ei_ < NELEM(extras); ei_++)                    \
            lens_[nl_++] = avail + extras[ei_];                             \
        for (size_t li_ = 0; li_ < nl_; li_++) {                            \
            size_t len = lens_[li_];                                        \
            body                                                            \
        }                                                                   \
    }

static enum result copy_read_fault(enum bad kind)
{
    FOR_EACH_LEN(avail, len, {
        for (size_t dst_off = 0; dst_off < 8; dst_off += 5) {
            enum result r = copy_read_fault_one(kind, avail, len, dst_off);
            if (r != PASS) {
                size_t l = strlen(why);
                snprintf(why + l, sizeof why - l, " [avail=%zu len=%zu dst_off=%zu]", avail, len, dst_off);
                return r;
            }
        }
    });
    return PASS;
}

static enum result copy_write_fault(enum bad kind)
{
    FOR_EACH_LEN(avail, len, {
        for (size_t src_off = 0; src_off < 8; src_off += 3) {
            enum result r = copy_write_fault_one(kind, avail, len, src_off);
            if (r != PASS) {
                size_t l = strlen(why);
                snprintf(why + l, sizeof why - l, " [avail=%zu len=%zu src_off=%zu]", avail, len, src_off);
                return r;
            }
        }
    });
    return PASS;
}

static enum result fill_fault(enum bad kind)
{
    FOR_EACH_LEN(avail, len, {
        enum result r = fill_fault_one(kind, avail, len);
        if (r != PASS) {
            size_t l = strlen(why);
            snprintf(why + l, sizeof why - l, " [avail=%zu len=%zu]", avail, len);
            return r;
        }
    });
    return PASS;
}

static enum result t_copy_read_prot_none(void) { return copy_read_fault(BAD_NONE); }
static enum result t_copy_read_unmapped(void) { return copy_read_fault(BAD_HOLE); }
static enum result t_copy_write_prot_read(void) { return copy_write_fault(BAD_READONLY); }
static enum result t_copy_write_prot_none(void) { return copy_write_fault(BAD_NONE); }
static enum result t_copy_write_unmapped(void) { return copy_write_fault(BAD_HOLE); }
static enum result t_fill_prot_read(void) { return fill_fault(BAD_READONLY); }
static enum result t_fill_prot_none(void) { return fill_fault(BAD_NONE); }
static enum result t_fill_unmapped(void) { return fill_fault(BAD_HOLE); }

/* Both sides fault: the first faulting byte wins; at the same index the read (src) is first. */
static enum result t_copy_both_sides_fault(void)
{
    size_t offs[] = { 0, 1, PG - 1, PG, PG + 1, 2 * PG + 7, 3 * PG };
    for (size_t i = 0; i < NELEM(offs); i++) {
        for (size_t j = 0; j < NELEM(offs); j++) {
            size_t a = offs[i], b = offs[j], len = 3 * PG + 100;
            uint8_t *src = map_rw(GOOD + 1), *dst = map_rw(GOOD + 1);
            for (size_t k = 0; k < (GOOD + 1) * PG; k++)
                src[k] = pat(k);
            memset(dst, CANARY, (GOOD + 1) * PG);
            protect(src + GOOD * PG, 1, PROT_NONE);
            protect(dst + GOOD * PG, 1, PROT_READ);
            uint8_t *s = src + GOOD * PG - a, *d = dst + GOOD * PG - b;
            struct uvm_fault f;
            fault_reset(&f);
            uint64_t left = uvm_copy(d, s, len, &f);
            size_t done = a < b ? a : b;
            EXPECT_EQ(left, len - done);
            EXPECT(memcmp(d, s, done) == 0);
            EXPECT_EQ(first_not(dst, GOOD * PG - b + done, (GOOD + 1) * PG, CANARY), (GOOD + 1) * PG);
            if (a <= b)
                TRY(expect_fault(&f, src + GOOD * PG, SIGSEGV, UVM_ACCESS_READ, SEGV_ACCERR));
            else
                TRY(expect_fault(&f, dst + GOOD * PG, SIGSEGV, UVM_ACCESS_WRITE, SEGV_ACCERR));
            unmap(src, GOOD + 1);
            unmap(dst, GOOD + 1);
        }
    }
    return PASS;
}

/* A range that starts inside a bad page and runs into a good one: nothing is done,
 * and nothing lands on the good page (no fast path stores out of order). */
static enum result t_fault_on_first_page_writes_nothing(void)
{
    size_t starts[] = { 1, 3, 8, 15, 100, PG - 1 };
    size_t tails[] = { 1, 2, 5, 8, 20, 64, 1000, 2 * PG };
    uint8_t *src = map_rw(4), *dst = map_rw(4), *buf = map_rw(4);
    for (size_t i = 0; i < 4 * PG; i++)
        src[i] = pat(i);
    protect(src + PG, 1, PROT_NONE);
    for (size_t i = 0; i < NELEM(starts); i++) {
        for (size_t j = 0; j < NELEM(tails); j++) {
            size_t k = starts[i], len = k + tails[j];
            struct uvm_fault f;
            /* Read fault on the first byte: dst untouched. */
            memset(buf, CANARY, 4 * PG);
            fault_reset(&f);
            EXPECT_EQ(uvm_copy(buf + 1, src + 2 * PG - k, len, &f), len);
            TRY(expect_fault(&f, src + 2 * PG - k, SIGSEGV, UVM_ACCESS_READ, SEGV_ACCERR));
            EXPECT_EQ(first_not(buf, 0, 4 * PG, CANARY), 4 * PG);
            /* Write fault on the first byte: the good page after it untouched. */
            memset(dst, CANARY, 4 * PG);
            protect(dst + PG, 1, PROT_READ);
            fault_reset(&f);
            EXPECT_EQ(uvm_copy(dst + 2 * PG - k, src + 2 * PG, len, &f), len);
            TRY(expect_fault(&f, dst + 2 * PG - k, SIGSEGV, UVM_ACCESS_WRITE, SEGV_ACCERR));
            fault_reset(&f);
            EXPECT_EQ(uvm_fill_zero(dst + 2 * PG - k, len, &f), len);
            TRY(expect_fault(&f, dst + 2 * PG - k, SIGSEGV, UVM_ACCESS_WRITE, SEGV_ACCERR));
            protect(dst + PG, 1, PROT_READ | PROT_WRITE);
            EXPECT_EQ(first_not(dst, 0, 4 * PG, CANARY), 4 * PG);
        }
    }
    unmap(src, 4);
    unmap(dst, 4);
    unmap(buf, 4);
    return PASS;
}

/* Lengths around the interesting sizes, unaligned on both sides, no fault: exact, no overrun. */
static enum result t_copy_and_fill_no_fault(void)
{
    size_t lens[96];
    size_t n = 0;
    for (size_t l = 0; l <= 70; l++)
        lens[n++] = l;
    size_t more[] = { 127, 128, 129, 255, 256, 257, 1023, 1024, 1025, PG - 1, PG + 1, 3 * PG + 5 };
    for (size_t i = 0; i < NELEM(more); i++)
        lens[n++] = more[i];
    uint8_t *src = map_rw(5), *dst = map_rw(5);
    for (size_t i = 0; i < 5 * PG; i++)
        src[i] = pat(i);
    for (size_t li = 0; li < n; li++) {
        for (size_t so = 0; so < 8; so += 7) {
            for (size_t doff = 0; doff < 64; doff += 3) {
                size_t len = lens[li];
                struct uvm_fault f;
                memset(dst, CANARY, 5 * PG);
                fault_reset(&f);
                EXPECT_EQ(uvm_copy(dst + doff, src + so, len, &f), 0);
                EXPECT(memcmp(dst + doff, src + so, len) == 0);
                EXPECT_EQ(first_not(dst, 0, doff, CANARY), doff);
                EXPECT_EQ(first_not(dst, doff + len, 5 * PG, CANARY), 5 * PG);
                EXPECT(fault_untouched(&f));

                memset(dst, CANARY, 5 * PG);
                EXPECT_EQ(uvm_fill_zero(dst + doff, len, &f), 0);
                EXPECT_EQ(first_not(dst, doff, doff + len, 0), doff + len);
                EXPECT_EQ(first_not(dst, 0, doff, CANARY), doff);
                EXPECT_EQ(first_not(dst, doff + len, 5 * PG, CANARY), 5 * PG);
                EXPECT(fault_untouched(&f));
            }
        }
    }
    unmap(src, 5);
    unmap(dst, 5);
    return PASS;
}

static enum result t_null_fault_pointer_is_allowed(void)
{
    uint8_t *m = map_rw(2);
    protect(m + PG, 1, PROT_NONE);
    uint8_t buf[64];
    uint64_t v = 0x1234;
    EXPECT_EQ(uvm_copy(buf, m + PG - 10, 40, NULL), 30);
    EXPECT_EQ(uvm_copy(m + PG - 3, buf, 40, NULL), 37);
    EXPECT_EQ(uvm_fill_zero(m + PG - 1, 40, NULL), 39);
    EXPECT_EQ(uvm_load64(m + PG, &v, NULL), -1);
    EXPECT_EQ(uvm_store8(m + PG, 1, NULL), -1);
    EXPECT_EQ(uvm_cas32(m + PG, 0, 1, (uint32_t *)&v, NULL), -1);
    EXPECT_EQ(v, 0x1234);
    unmap(m, 2);
    return PASS;
}

/* ------------------------------------------------------------------ SIGBUS */

static enum result t_sigbus_truncated_memfd(void)
{
    int fd = memfd_create("uvm-test", MFD_CLOEXEC);
    if (fd < 0) {
        snprintf(why, sizeof why, "memfd_create: %s", strerror(errno));
        return SKIP;
    }
    EXPECT(ftruncate(fd, 2 * PG) == 0);
    uint8_t *m = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    EXPECT(m != MAP_FAILED);
    memset(m, 0x33, 2 * PG);
    EXPECT(ftruncate(fd, PG) == 0);
    uint8_t *gone = m + PG;

    uint8_t buf[64];
    struct uvm_fault f;
    memset(buf, CANARY, sizeof buf);
    fault_reset(&f);
    EXPECT_EQ(uvm_copy(buf, gone - 10, 30, &f), 20);
    EXPECT_EQ(first_not(buf, 0, 10, 0x33), 10);
    EXPECT_EQ(first_not(buf, 10, sizeof buf, CANARY), sizeof buf);
    TRY(expect_fault(&f, gone, SIGBUS, UVM_ACCESS_READ, BUS_ADRERR));

    fault_reset(&f);
    EXPECT_EQ(uvm_copy(gone - 7, buf, 30, &f), 23);
    TRY(expect_fault(&f, gone, SIGBUS, UVM_ACCESS_WRITE, BUS_ADRERR));

    fault_reset(&f);
    EXPECT_EQ(uvm_fill_zero(gone - 3, 10, &f), 7);
    EXPECT_EQ(first_not(gone - 3, 0, 3, 0), 3);
    TRY(expect_fault(&f, gone, SIGBUS, UVM_ACCESS_WRITE, BUS_ADRERR));

    uint32_t v = 7;
    fault_reset(&f);
    EXPECT_EQ(uvm_load32(gone + 8, &v, &f), -1);
    EXPECT_EQ(v, 7);
    TRY(expect_fault(&f, gone + 8, SIGBUS, UVM_ACCESS_READ, BUS_ADRERR));
    fault_reset(&f);
    EXPECT_EQ(uvm_store64(gone + 16, 1, &f), -1);
    TRY(expect_fault(&f, gone + 16, SIGBUS, UVM_ACCESS_WRITE, BUS_ADRERR));
    munmap(m, 2 * PG);
    close(fd);
    return PASS;
}

/* ------------------------------------------------------------------ load / store / cas */

static enum result t_load_store_good_memory(void)
{
    uint8_t *m = map_rw(1);
    struct uvm_fault f;
    fault_reset(&f);
    for (size_t off = 0; off < 16; off++) {
        for (size_t i = 0; i < 64; i++)
            m[i] = pat(i + off);
        /* Each load writes exactly its width to *out. */
        uint64_t e64 = 0, outbuf[3];
        uint8_t *out = (uint8_t *)&outbuf[1];
        size_t widths[] = { 1, 2, 4, 8 };
        for (size_t w = 0; w < 4; w++) {
            memset(outbuf, CANARY, sizeof outbuf);
            int rc = widths[w] == 1   ? uvm_load8(m + off, out, &f)
                     : widths[w] == 2 ? uvm_load16(m + off, (uint16_t *)out, &f)
                     : widths[w] == 4 ? uvm_load32(m + off, (uint32_t *)out, &f)
                                      : uvm_load64(m + off, (uint64_t *)out, &f);
            EXPECT_EQ(rc, 0);
            EXPECT(memcmp(out, m + off, widths[w]) == 0);
            EXPECT_EQ(first_not((uint8_t *)outbuf, 0, 8, CANARY), 8);
            EXPECT_EQ(first_not((uint8_t *)outbuf, 8 + widths[w], sizeof outbuf, CANARY), sizeof outbuf);
        }
        memcpy(&e64, m + off, 8);
        uint64_t v64 = 0;
        EXPECT_EQ(uvm_load64(m + off, &v64, &f), 0);
        EXPECT_EQ(v64, e64);

        /* Each store writes exactly its width. */
        uint64_t x = 0x0123456789abcdefULL;
        for (size_t w = 0; w < 4; w++) {
            memset(m, CANARY, 64);
            int rc = widths[w] == 1   ? uvm_store8(m + off, (uint8_t)x, &f)
                     : widths[w] == 2 ? uvm_store16(m + off, (uint16_t)x, &f)
                     : widths[w] == 4 ? uvm_store32(m + off, (uint32_t)x, &f)
                                      : uvm_store64(m + off, x, &f);
            EXPECT_EQ(rc, 0);
            EXPECT(memcmp(m + off, &x, widths[w]) == 0);
            EXPECT_EQ(first_not(m, 0, off, CANARY), off);
            EXPECT_EQ(first_not(m, off + widths[w], 64, CANARY), 64);
        }
    }
    EXPECT(fault_untouched(&f));
    unmap(m, 1);
    return PASS;
}

static enum result t_load_faults_leave_out_untouched(void)
{
    enum bad kinds[] = { BAD_NONE, BAD_HOLE };
    for (size_t k = 0; k < 2; k++) {
        uint8_t *m = map_rw(3);
        uint8_t *bad = m + PG;
        make_bad(bad, kinds[k]);
        int code = expected_code(kinds[k]);
        struct uvm_fault f;
        uint8_t v8 = 0x5a;
        uint16_t v16 = 0x5a5a;
        uint32_t v32 = 0x5a5a5a5a;
        uint64_t v64 = 0x5a5a5a5a5a5a5a5aULL;
        for (size_t off = 0; off < PG; off += PG / 2 + 3) {
            fault_reset(&f);
            EXPECT_EQ(uvm_load8(bad + off, &v8, &f), -1);
            TRY(expect_fault(&f, bad + off, SIGSEGV, UVM_ACCESS_READ, code));
            fault_reset(&f);
            EXPECT_EQ(uvm_load16(bad + off, &v16, &f), -1);
            TRY(expect_fault(&f, bad + off, SIGSEGV, UVM_ACCESS_READ, code));
            fault_reset(&f);
            EXPECT_EQ(uvm_load32(bad + off, &v32, &f), -1);
            TRY(expect_fault(&f, bad + off, SIGSEGV, UVM_ACCESS_READ, code));
            fault_reset(&f);
            EXPECT_EQ(uvm_load64(bad + off, &v64, &f), -1);
            TRY(expect_fault(&f, bad + off, SIGSEGV, UVM_ACCESS_READ, code));
        }
        /* An unaligned load straddling into the bad page faults on the bad page. */
        fault_reset(&f);
        EXPECT_EQ(uvm_load64(bad - 3, &v64, &f), -1);
        TRY(expect_fault(&f, bad, SIGSEGV, UVM_ACCESS_READ, code));
        fault_reset(&f);
        EXPECT_EQ(uvm_load16(bad - 1, &v16, &f), -1);
        TRY(expect_fault(&f, bad, SIGSEGV, UVM_ACCESS_READ, code));
        EXPECT_EQ(v8, 0x5a);
        EXPECT_EQ(v16, 0x5a5a);
        EXPECT_EQ(v32, 0x5a5a5a5a);
        EXPECT_EQ(v64, 0x5a5a5a5a5a5a5a5aULL);
        if (kinds[k] == BAD_HOLE)
            munmap(m, PG), munmap(m + 2 * PG, PG);
        else
            unmap(m, 3);
    }
    return PASS;
}

static enum result t_store_faults_leave_memory_untouched(void)
{
    enum bad kinds[] = { BAD_READONLY, BAD_NONE, BAD_HOLE };
    for (size_t k = 0; k < 3; k++) {
        uint8_t *m = map_rw(3);
        memset(m, CANARY, 3 * PG);
        uint8_t *bad = m + PG;
        make_bad(bad, kinds[k]);
        int code = expected_code(kinds[k]);
        struct uvm_fault f;
        size_t off = 40;
        fault_reset(&f);
        EXPECT_EQ(uvm_store8(bad + off, 1, &f), -1);
        TRY(expect_fault(&f, bad + off, SIGSEGV, UVM_ACCESS_WRITE, code));
        fault_reset(&f);
        EXPECT_EQ(uvm_store16(bad + off, 1, &f), -1);
        TRY(expect_fault(&f, bad + off, SIGSEGV, UVM_ACCESS_WRITE, code));
        fault_reset(&f);
        EXPECT_EQ(uvm_store32(bad + off, 1, &f), -1);
        TRY(expect_fault(&f, bad + off, SIGSEGV, UVM_ACCESS_WRITE, code));
        fault_reset(&f);
        EXPECT_EQ(uvm_store64(bad + off, 1, &f), -1);
        TRY(expect_fault(&f, bad + off, SIGSEGV, UVM_ACCESS_WRITE, code));
        /* Straddling: nothing of the store lands on the good page either. */
        fault_reset(&f);
        EXPECT_EQ(uvm_store64(bad - 4, 0, &f), -1);
        TRY(expect_fault(&f, bad, SIGSEGV, UVM_ACCESS_WRITE, code));
        EXPECT_EQ(first_not(m, 0, PG, CANARY), PG);
        if (kinds[k] == BAD_READONLY)
            EXPECT_EQ(first_not(bad, 0, PG, CANARY), PG);
        if (kinds[k] == BAD_HOLE)
            munmap(m, PG), munmap(m + 2 * PG, PG);
        else
            unmap(m, 3);
    }
    return PASS;
}

static enum result t_cas_swap_and_no_swap(void)
{
    uint8_t *m = map_rw(1);
    uint32_t *p32 = (uint32_t *)(m + 64);
    uint64_t *p64 = (uint64_t *)(m + 128);
    struct uvm_fault f;
    fault_reset(&f);
    uint32_t o32 = 0;
    uint64_t o64 = 0;

    *p32 = 10;
    EXPECT_EQ(uvm_cas32(p32, 10, 11, &o32, &f), 0); /* swap */
    EXPECT_EQ(o32, 10);
    EXPECT_EQ(*p32, 11);
    EXPECT_EQ(uvm_cas32(p32, 10, 12, &o32, &f), 0); /* no swap */
    EXPECT_EQ(o32, 11);
    EXPECT_EQ(*p32, 11);
    EXPECT_EQ(uvm_cas32(p32, 11, 0xffffffffu, &o32, &f), 0);
    EXPECT_EQ(*p32, 0xffffffffu);

    *p64 = 0x100000000ULL;
    EXPECT_EQ(uvm_cas64(p64, 0x100000000ULL, 0xfedcba9876543210ULL, &o64, &f), 0);
    EXPECT_EQ(o64, 0x100000000ULL);
    EXPECT_EQ(*p64, 0xfedcba9876543210ULL);
    EXPECT_EQ(uvm_cas64(p64, 0, 1, &o64, &f), 0); /* the high half differs: no swap */
    EXPECT_EQ(o64, 0xfedcba9876543210ULL);
    EXPECT_EQ(*p64, 0xfedcba9876543210ULL);
    EXPECT_EQ(uvm_cas64(p64, 0x76543210ULL, 1, &o64, &f), 0); /* only the low half equal */
    EXPECT_EQ(*p64, 0xfedcba9876543210ULL);
    EXPECT(fault_untouched(&f));
    unmap(m, 1);
    return PASS;
}

static enum result t_cas_faults_leave_everything_untouched(void)
{
    enum bad kinds[] = { BAD_READONLY, BAD_NONE, BAD_HOLE };
    for (size_t k = 0; k < 3; k++) {
        uint8_t *m = map_rw(3);
        uint8_t *bad = m + PG;
        uint32_t *p32 = (uint32_t *)(bad + 64);
        uint64_t *p64 = (uint64_t *)(bad + 128);
        *p32 = 5;
        *p64 = 6;
        make_bad(bad, kinds[k]);
        int code = expected_code(kinds[k]);
        struct uvm_fault f;
        uint32_t o32 = 0x77;
        uint64_t o64 = 0x88;
        /* Both the swapping and the non-swapping comparison write, so both fault. */
        for (uint32_t expected = 5; expected <= 6; expected++) {
            fault_reset(&f);
            EXPECT_EQ(uvm_cas32(p32, expected, 9, &o32, &f), -1);
            TRY(expect_fault(&f, p32, SIGSEGV, UVM_ACCESS_WRITE, code));
            fault_reset(&f);
            EXPECT_EQ(uvm_cas64(p64, expected + 1, 9, &o64, &f), -1);
            TRY(expect_fault(&f, p64, SIGSEGV, UVM_ACCESS_WRITE, code));
        }
        EXPECT_EQ(o32, 0x77);
        EXPECT_EQ(o64, 0x88);
        if (kinds[k] == BAD_READONLY) {
            EXPECT_EQ(*p32, 5);
            EXPECT_EQ(*p64, 6);
        }
        if (kinds[k] == BAD_HOLE)
            munmap(m, PG), munmap(m + 2 * PG, PG);
        else
            unmap(m, 3);
    }
    return PASS;
}

static enum result t_swap_exchanges_and_reports_the_old_value(void)
{
    uint8_t *m = map_rw(1);
    uint32_t *p32 = (uint32_t *)(m + 64);
    uint64_t *p64 = (uint64_t *)(m + 128);
    struct uvm_fault f;
    fault_reset(&f);
    uint32_t o32 = 0;
    uint64_t o64 = 0;

    *p32 = 10;
    EXPECT_EQ(uvm_swap32(p32, 0xffffffffu, &o32, &f), 0);
    EXPECT_EQ(o32, 10);
    EXPECT_EQ(*p32, 0xffffffffu);
    EXPECT_EQ(uvm_swap32(p32, 0xffffffffu, &o32, &f), 0); /* same value: still a swap */
    EXPECT_EQ(o32, 0xffffffffu);

    *p64 = 0x100000000ULL;
    EXPECT_EQ(uvm_swap64(p64, 0xfedcba9876543210ULL, &o64, &f), 0);
    EXPECT_EQ(o64, 0x100000000ULL);
    EXPECT_EQ(*p64, 0xfedcba9876543210ULL);
    EXPECT_EQ(*(uint32_t *)(m + 136), 0); /* the neighbour is untouched */
    EXPECT(fault_untouched(&f));
    unmap(m, 1);
    return PASS;
}

static enum result t_swap_faults_leave_everything_untouched(void)
{
    enum bad kinds[] = { BAD_READONLY, BAD_NONE, BAD_HOLE };
    for (size_t k = 0; k < 3; k++) {
        uint8_t *m = map_rw(3);
        uint8_t *bad = m + PG;
        uint32_t *p32 = (uint32_t *)(bad + 64);
        uint64_t *p64 = (uint64_t *)(bad + 128);
        *p32 = 5;
        *p64 = 6;
        make_bad(bad, kinds[k]);
        int code = expected_code(kinds[k]);
        struct uvm_fault f;
        uint32_t o32 = 0x77;
        uint64_t o64 = 0x88;
        fault_reset(&f);
        EXPECT_EQ(uvm_swap32(p32, 9, &o32, &f), -1);
        TRY(expect_fault(&f, p32, SIGSEGV, UVM_ACCESS_WRITE, code));
        fault_reset(&f);
        EXPECT_EQ(uvm_swap64(p64, 9, &o64, &f), -1);
        TRY(expect_fault(&f, p64, SIGSEGV, UVM_ACCESS_WRITE, code));
        EXPECT_EQ(uvm_swap64(p64, 9, &o64, NULL), -1); /* no fault record: still fails cleanly */
        EXPECT_EQ(o32, 0x77);
        EXPECT_EQ(o64, 0x88);
        if (kinds[k] == BAD_READONLY) {
            EXPECT_EQ(*p32, 5);
            EXPECT_EQ(*p64, 6);
        }
        if (kinds[k] == BAD_HOLE)
            munmap(m, PG), munmap(m + 2 * PG, PG);
        else
            unmap(m, 3);
    }
    return PASS;
}

/* Null, kernel-half and non-canonical pointers: every one fails instead of crashing. */
static enum result t_wild_pointers(void)
{
    struct uvm_fault f;
    uint64_t v = 3;
    fault_reset(&f);
    EXPECT_EQ(uvm_load64(NULL, &v, &f), -1);
    TRY(expect_fault(&f, NULL, SIGSEGV, UVM_ACCESS_READ, SEGV_MAPERR));
    fault_reset(&f);
    EXPECT_EQ(uvm_store32((void *)0xffffffffff600800ULL, 1, &f), -1); /* vsyscall page / kernel half */
    EXPECT_EQ(f.signo, SIGSEGV);
    EXPECT_EQ(f.access, UVM_ACCESS_WRITE);
    fault_reset(&f);
    /* Non-canonical: #GP, which the kernel reports as SI_KERNEL with address 0. */
    EXPECT_EQ(uvm_load8((void *)0x8000000000000000ULL, (uint8_t *)&v, &f), -1);
    EXPECT_EQ(f.signo, SIGSEGV);
    EXPECT_EQ(f.code, SI_KERNEL);
    EXPECT_EQ(f.addr, 0);
    EXPECT_EQ(v, 3);
    uint8_t buf[16];
    EXPECT_EQ(uvm_copy(buf, (void *)0x8000000000000000ULL, 16, &f), 16);
    EXPECT_EQ(uvm_fill_zero(NULL, 16, &f), 16);
    TRY(expect_fault(&f, NULL, SIGSEGV, UVM_ACCESS_WRITE, SEGV_MAPERR));
    return PASS;
}

static enum result t_install_twice_and_counters(void)
{
    EXPECT_EQ(uvm_install(), 0);
    EXPECT_EQ(uvm_install(), 0);
    struct sigaction cur;
    EXPECT(sigaction(SIGSEGV, NULL, &cur) == 0);
    EXPECT((cur.sa_flags & (SA_SIGINFO | SA_ONSTACK)) == (SA_SIGINFO | SA_ONSTACK));
    EXPECT(sigaction(SIGBUS, NULL, &cur) == 0);
    EXPECT((cur.sa_flags & (SA_SIGINFO | SA_ONSTACK)) == (SA_SIGINFO | SA_ONSTACK));
    uint64_t c0 = uvm_stat_claimed(), f0 = uvm_stat_forwarded();
    uint8_t v;
    EXPECT_EQ(uvm_load8(NULL, &v, NULL), -1);
    EXPECT_EQ(uvm_stat_claimed(), c0 + 1);
    EXPECT_EQ(uvm_stat_forwarded(), f0);
    return PASS;
}

/* ------------------------------------------------------------------ threads */

#define NTHREADS 8
#define ITERS 1500

struct worker {
    pthread_t tid;
    int index;
    int altstack;
    uint64_t faults; /* calls that reported a fault */
    char error[256];
};

static uint8_t *shared_readonly; /* one page every thread write-faults on */
static uint64_t shared_counter;   /* incremented by every thread with uvm_cas64 */

#define WFAIL(w, ...)                                              \
    do {                                                           \
        snprintf((w)->error, sizeof (w)->error, __VA_ARGS__);      \
        return NULL;                                               \
    } while (0)

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    stack_t ss;
    if (w->altstack) {
        size_t sz = (size_t)sysconf(_SC_SIGSTKSZ);
        if (sz < 16384)
            sz = 16384;
        ss.ss_sp = malloc(sz);
        ss.ss_size = sz;
        ss.ss_flags = 0;
        if (sigaltstack(&ss, NULL) != 0)
            WFAIL(w, "sigaltstack: %s", strerror(errno));
    }
    uint8_t *src = map_rw(GOOD + 1);
    uint8_t *dst = map_rw(GOOD + 1);
    for (size_t i = 0; i < (GOOD + 1) * PG; i++)
        src[i] = pat(i + (size_t)w->index);
    uint8_t *bad = src + GOOD * PG;
    protect(bad, 1, PROT_NONE);
    uint32_t seed = 0x9e3779b9u * (uint32_t)(w->index + 1);

    for (int it = 0; it < ITERS; it++) {
        seed = seed * 1664525u + 1013904223u;
        size_t avail = (seed >> 8) % (GOOD * PG + 1);
        size_t len = avail + 1 + (seed >> 3) % 64;
        struct uvm_fault f;
        memset(&f, 0, sizeof f);
        memset(dst, CANARY, (GOOD + 1) * PG);
        uint64_t left = uvm_copy(dst, bad - avail, len, &f);
        if (left != len - avail || f.addr != (uintptr_t)bad || f.signo != SIGSEGV || f.access != 0 ||
            f.code != SEGV_ACCERR)
            WFAIL(w, "copy it=%d avail=%zu len=%zu: left=%llu addr=%p", it, avail, len,
                  (unsigned long long)left, (void *)(uintptr_t)f.addr);
        if (memcmp(dst, bad - avail, avail) != 0 || dst[avail] != CANARY)
            WFAIL(w, "copy it=%d: prefix wrong", it);

        size_t woff = (seed >> 5) % PG;
        memset(&f, 0, sizeof f);
        if (uvm_fill_zero(shared_readonly + woff, 16, &f) != 16 || f.addr != (uintptr_t)(shared_readonly + woff) ||
            f.access != UVM_ACCESS_WRITE)
            WFAIL(w, "fill it=%d", it);

        uint64_t v = 42;
        memset(&f, 0, sizeof f);
        if (uvm_load64(bad + 8 * (it % 512), &v, &f) != -1 || v != 42 ||
            f.addr != (uintptr_t)(bad + 8 * (it % 512)))
            WFAIL(w, "load it=%d", it);

        for (;;) {
            uint64_t seen = __atomic_load_n(&shared_counter, __ATOMIC_RELAXED), obs;
            if (uvm_cas64(&shared_counter, seen, seen + 1, &obs, NULL) != 0)
                WFAIL(w, "cas faulted on good memory");
            if (obs == seen)
                break;
        }
        w->faults += 3;
    }
    unmap(src, GOOD + 1);
    unmap(dst, GOOD + 1);
    if (w->altstack) {
        ss.ss_flags = SS_DISABLE;
        sigaltstack(&ss, NULL);
        free(ss.ss_sp);
    }
    return NULL;
}

static enum result t_threads_fault_concurrently(void)
{
    struct worker ws[NTHREADS];
    shared_readonly = map_rw(1);
    protect(shared_readonly, 1, PROT_READ);
    shared_counter = 0;
    uint64_t c0 = uvm_stat_claimed();
    for (int i = 0; i < NTHREADS; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].index = i;
        ws[i].altstack = i % 2;
        EXPECT(pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) == 0);
    }
    uint64_t faults = 0;
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(ws[i].tid, NULL);
    for (int i = 0; i < NTHREADS; i++) {
        if (ws[i].error[0])
            FAILF("thread %d: %s", i, ws[i].error);
        faults += ws[i].faults;
    }
    EXPECT_EQ(shared_counter, (uint64_t)NTHREADS * ITERS);
    EXPECT(uvm_stat_claimed() - c0 >= faults);
    unmap(shared_readonly, 1);
    return PASS;
}

/* ------------------------------------------------------------------ forwarding (child processes) */

static sigjmp_buf jump;
static volatile sig_atomic_t prev_calls, prev_sig, prev_code, prev_had_uc, prev_usr1_blocked;
static void *volatile prev_addr;

static void prev_siginfo(int sig, siginfo_t *si, void *uc)
{
    sigset_t cur;
    prev_calls++;
    prev_sig = sig;
    prev_code = si->si_code;
    prev_addr = si->si_addr;
    prev_had_uc = uc != NULL;
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    prev_usr1_blocked = sigismember(&cur, SIGUSR1);
    siglongjmp(jump, 1);
}

static void prev_plain(int sig)
{
    prev_calls++;
    prev_sig = sig;
    siglongjmp(jump, 1);
}

__attribute__((noinline)) static void touch(const void *p) { (void)*(const volatile uint8_t *)p; }

static void say(const char *s) { (void)!write(1, s, strlen(s)); }

#define CHILD_TIMEOUT_S 10
#define RUN_TIMEOUT_S 300

#define CHILD_CHECK(c)                                                         \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "child line %d: %s\n", __LINE__, #c);              \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static uint8_t *bad_page(void)
{
    uint8_t *m = map_rw(1);
    protect(m, 1, PROT_NONE);
    return m;
}

static uint8_t *bus_page(void)
{
    int fd = memfd_create("uvm-bus", MFD_CLOEXEC);
    CHILD_CHECK(fd >= 0);
    CHILD_CHECK(ftruncate(fd, PG) == 0);
    uint8_t *m = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHILD_CHECK(m != MAP_FAILED);
    CHILD_CHECK(ftruncate(fd, 0) == 0);
    return m;
}

static void set_action(int sig, void (*h)(int), void (*sa)(int, siginfo_t *, void *), int flags)
{
    struct sigaction act;
    memset(&act, 0, sizeof act);
    sigemptyset(&act.sa_mask);
    sigaddset(&act.sa_mask, SIGUSR1);
    if (sa)
        act.sa_sigaction = sa;
    else
        act.sa_handler = h;
    act.sa_flags = flags | (sa ? SA_SIGINFO : 0);
    CHILD_CHECK(sigaction(sig, &act, NULL) == 0);
}

/* A previous SA_SIGINFO handler gets foreign SIGSEGV/SIGBUS with the original arguments. */
static int child_siginfo_prev(void)
{
    uint8_t *bad = bad_page(), *bus = bus_page();
    set_action(SIGSEGV, NULL, prev_siginfo, SA_RESTART);
    set_action(SIGBUS, NULL, prev_siginfo, 0);
    CHILD_CHECK(uvm_install() == 0);
    CHILD_CHECK(uvm_install() == 0);

    struct sigaction cur;
    CHILD_CHECK(sigaction(SIGSEGV, NULL, &cur) == 0);
    CHILD_CHECK(cur.sa_sigaction != prev_siginfo);
    CHILD_CHECK((cur.sa_flags & (SA_SIGINFO | SA_ONSTACK | SA_RESTART)) == (SA_SIGINFO | SA_ONSTACK | SA_RESTART));
    CHILD_CHECK(sigismember(&cur.sa_mask, SIGUSR1));
    CHILD_CHECK(sigaction(SIGBUS, NULL, &cur) == 0);
    CHILD_CHECK(!(cur.sa_flags & SA_RESTART));

    /* A fault outside the primitives. */
    if (sigsetjmp(jump, 1) == 0) {
        touch(bad + 5);
        CHILD_CHECK(!"survived a fault");
    }
    CHILD_CHECK(prev_calls == 1 && prev_sig == SIGSEGV && prev_code == SEGV_ACCERR);
    CHILD_CHECK(prev_addr == bad + 5 && prev_had_uc && prev_usr1_blocked);
    CHILD_CHECK(uvm_stat_forwarded() == 1 && uvm_stat_claimed() == 0);

    /* A fault inside a primitive is ours: the previous handler does not see it. */
    uint8_t v;
    CHILD_CHECK(uvm_load8(bad, &v, NULL) == -1);
    CHILD_CHECK(prev_calls == 1 && uvm_stat_claimed() == 1 && uvm_stat_forwarded() == 1);

    /* SIGBUS outside the primitives. */
    if (sigsetjmp(jump, 1) == 0) {
        touch(bus + 9);
        CHILD_CHECK(!"survived a bus error");
    }
    CHILD_CHECK(prev_calls == 2 && prev_sig == SIGBUS && prev_code == BUS_ADRERR && prev_addr == bus + 9);
    CHILD_CHECK(uvm_stat_forwarded() == 2);

    /* A user-sent SIGSEGV. */
    if (sigsetjmp(jump, 1) == 0) {
        raise(SIGSEGV);
        CHILD_CHECK(!"survived raise");
    }
    CHILD_CHECK(prev_calls == 3 && prev_sig == SIGSEGV && prev_code == SI_TKILL);
    CHILD_CHECK(uvm_stat_forwarded() == 3);

    /* The si_code rule, white box: a "signal" whose saved RIP is the first instruction
     * of uvm_load8 (its faulting load) is claimed only when si_code > 0. */
    CHILD_CHECK(sigaction(SIGSEGV, NULL, &cur) == 0);
    siginfo_t si;
    static ucontext_t uc;
    memset(&si, 0, sizeof si);
    si.si_signo = SIGSEGV;
    si.si_code = SI_USER;
    si.si_addr = bad;
    memset(&uc, 0, sizeof uc);
    uc.uc_mcontext.gregs[REG_RIP] = (greg_t)(uintptr_t)uvm_load8;
    if (sigsetjmp(jump, 1) == 0) {
        cur.sa_sigaction(SIGSEGV, &si, &uc);
        CHILD_CHECK(!"user signal was claimed");
    }
    CHILD_CHECK(prev_calls == 4 && prev_code == SI_USER && uvm_stat_forwarded() == 4);
    CHILD_CHECK(uc.uc_mcontext.gregs[REG_RIP] == (greg_t)(uintptr_t)uvm_load8);
    si.si_code = SEGV_MAPERR;
    uc.uc_mcontext.gregs[REG_ERR] = 0x2;
    cur.sa_sigaction(SIGSEGV, &si, &uc);
    CHILD_CHECK(prev_calls == 4 && uvm_stat_claimed() == 2 && uvm_stat_forwarded() == 4);
    CHILD_CHECK(uc.uc_mcontext.gregs[REG_RIP] != (greg_t)(uintptr_t)uvm_load8);
    CHILD_CHECK(uc.uc_mcontext.gregs[REG_RAX] == (greg_t)(uintptr_t)bad);
    CHILD_CHECK(uc.uc_mcontext.gregs[REG_R9] == SIGSEGV);
    CHILD_CHECK(uc.uc_mcontext.gregs[REG_R10] == UVM_ACCESS_WRITE);
    CHILD_CHECK(uc.uc_mcontext.gregs[REG_R11] == SEGV_MAPERR);
    say("ok\n");
    return 0;
}

/* A previous plain handler (no SA_SIGINFO) gets sa_handler(sig); SA_NODEFER is kept. */
static int child_plain_prev(void)
{
    uint8_t *bad = bad_page();
    set_action(SIGSEGV, prev_plain, NULL, SA_NODEFER);
    CHILD_CHECK(uvm_install() == 0);
    struct sigaction cur;
    CHILD_CHECK(sigaction(SIGSEGV, NULL, &cur) == 0);
    CHILD_CHECK((cur.sa_flags & (SA_SIGINFO | SA_ONSTACK | SA_NODEFER)) == (SA_SIGINFO | SA_ONSTACK | SA_NODEFER));
    CHILD_CHECK(!(cur.sa_flags & SA_RESTART));
    for (int i = 1; i <= 3; i++) {
        if (sigsetjmp(jump, 1) == 0) {
            touch(bad);
            CHILD_CHECK(!"survived a fault");
        }
        CHILD_CHECK(prev_calls == i && prev_sig == SIGSEGV && uvm_stat_forwarded() == (uint64_t)i);
    }
    CHILD_CHECK(uvm_stat_claimed() == 0);
    say("ok\n");
    return 0;
}

/* Previous SIG_DFL / SIG_IGN: a foreign fault kills the process with that signal. */
static int child_dies(int sig, void (*disposition)(int), int user_sent)
{
    uint8_t *target = sig == SIGBUS ? bus_page() : bad_page();
    CHILD_CHECK(signal(sig, disposition) != SIG_ERR);
    CHILD_CHECK(uvm_install() == 0);
    struct uvm_fault f;
    uint8_t v;
    CHILD_CHECK(uvm_load8(target, &v, &f) == -1 && f.signo == sig); /* the handler is live */
    say("armed\n");
    if (user_sent)
        raise(sig);
    else
        touch(target);
    say("survived\n");
    return 0;
}

static int child_ignored_user_signal(void)
{
    CHILD_CHECK(signal(SIGSEGV, SIG_IGN) != SIG_ERR);
    CHILD_CHECK(uvm_install() == 0);
    raise(SIGSEGV);
    CHILD_CHECK(uvm_stat_forwarded() == 1);
    say("ok\n");
    return 0;
}

/* SA_RESETHAND: the previous handler runs once, the next foreign fault is fatal. */
static int child_resethand(void)
{
    uint8_t *bad = bad_page();
    set_action(SIGSEGV, NULL, prev_siginfo, SA_RESETHAND);
    CHILD_CHECK(uvm_install() == 0);
    if (sigsetjmp(jump, 1) == 0) {
        touch(bad);
        CHILD_CHECK(!"survived a fault");
    }
    CHILD_CHECK(prev_calls == 1);
    uint8_t v;
    CHILD_CHECK(uvm_load8(bad, &v, NULL) == -1); /* still ours */
    say("stage1\n");
    touch(bad);
    say("survived\n");
    return 0;
}

static int child_main(const char *name)
{
    prctl(PR_SET_DUMPABLE, 0); /* dying children leave no core */
    alarm(CHILD_TIMEOUT_S);    /* a fault that re-executes forever dies of SIGALRM instead */
    if (!strcmp(name, "siginfo-prev"))
        return child_siginfo_prev();
    if (!strcmp(name, "plain-prev"))
        return child_plain_prev();
    if (!strcmp(name, "dfl-segv"))
        return child_dies(SIGSEGV, SIG_DFL, 0);
    if (!strcmp(name, "dfl-bus"))
        return child_dies(SIGBUS, SIG_DFL, 0);
    if (!strcmp(name, "ign-segv"))
        return child_dies(SIGSEGV, SIG_IGN, 0);
    if (!strcmp(name, "ign-bus"))
        return child_dies(SIGBUS, SIG_IGN, 0);
    if (!strcmp(name, "dfl-user-segv"))
        return child_dies(SIGSEGV, SIG_DFL, 1);
    if (!strcmp(name, "ign-user-segv"))
        return child_ignored_user_signal();
    if (!strcmp(name, "resethand"))
        return child_resethand();
    fprintf(stderr, "unknown child %s\n", name);
    return 2;
}

/* Runs "self --child name"; returns its wait status and its stdout in out. */
static int spawn_child(const char *name, char *out, size_t outsz)
{
    int pfd[2];
    if (pipe(pfd) != 0)
        abort();
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        char *argv[] = { "test_native", "--child", (char *)name, NULL };
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < outsz && (r = read(pfd[0], out + n, outsz - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = 0;
    close(pfd[0]);
    int status;
    waitpid(pid, &status, 0);
    return status;
}

static enum result expect_child_ok(const char *name)
{
    char out[256];
    int st = spawn_child(name, out, sizeof out);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || strcmp(out, "ok\n") != 0)
        FAILF("child %s: status 0x%x, output \"%s\"", name, st, out);
    return PASS;
}

static enum result expect_child_dies(const char *name, int sig, const char *marker)
{
    char out[256];
    int st = spawn_child(name, out, sizeof out);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != sig || strcmp(out, marker) != 0)
        FAILF("child %s: status 0x%x (want death by %d), output \"%s\"", name, st, sig, out);
    return PASS;
}

static enum result t_forward_to_siginfo_handler(void) { return expect_child_ok("siginfo-prev"); }
static enum result t_forward_to_plain_handler(void) { return expect_child_ok("plain-prev"); }
static enum result t_forward_ignored_user_signal(void) { return expect_child_ok("ign-user-segv"); }
static enum result t_default_segv_kills(void) { return expect_child_dies("dfl-segv", SIGSEGV, "armed\n"); }
static enum result t_default_sigbus_kills(void) { return expect_child_dies("dfl-bus", SIGBUS, "armed\n"); }
static enum result t_ignored_segv_fault_kills(void) { return expect_child_dies("ign-segv", SIGSEGV, "armed\n"); }
static enum result t_ignored_sigbus_fault_kills(void) { return expect_child_dies("ign-bus", SIGBUS, "armed\n"); }
static enum result t_default_user_segv_kills(void) { return expect_child_dies("dfl-user-segv", SIGSEGV, "armed\n"); }
static enum result t_resethand_runs_once(void) { return expect_child_dies("resethand", SIGSEGV, "stage1\n"); }

/* A fork()ed child of this process (handler installed, previous action SIG_DFL) dies of SIGSEGV. */
static enum result t_forked_child_dies_of_segv(void)
{
    int pfd[2];
    EXPECT(pipe(pfd) == 0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_DUMPABLE, 0);
        alarm(CHILD_TIMEOUT_S);
        uint8_t v;
        if (uvm_load8(NULL, &v, NULL) == -1) /* primitives still fallible in the child */
            (void)!write(pfd[1], "armed", 5);
        touch((void *)16);
        _exit(0);
    }
    close(pfd[1]);
    char buf[16] = { 0 };
    (void)!read(pfd[0], buf, sizeof buf - 1);
    close(pfd[0]);
    int st;
    EXPECT(waitpid(pid, &st, 0) == pid);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV || strcmp(buf, "armed") != 0)
        FAILF("status 0x%x, output \"%s\"", st, buf);
    return PASS;
}

/* ------------------------------------------------------------------ throughput */

static void *(*volatile memcpy_fn)(void *, const void *, size_t) = memcpy;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void throughput(void)
{
    struct { size_t size, src_off, dst_off; } rows[] = {
        { 4096, 0, 0 }, { 65536, 0, 0 }, { 1 << 20, 0, 0 },
        { 4096, 3, 1 }, { 65536, 3, 1 }, { 1 << 20, 3, 1 },
        { 8, 0, 0 }, { 16, 0, 0 }, { 64, 0, 0 }, { 256, 0, 0 }, { 512, 3, 1 }, { 1024, 0, 0 }, { 2048, 0, 0 },
    };
    enum { SAMPLES = 31 };
    size_t pages = (1 << 20) / PG + 1;
    uint8_t *src = map_rw(pages), *dst = map_rw(pages);
    memset(src, 1, pages * PG);
    memset(dst, 2, pages * PG);
    printf("throughput (median of %d samples, resident memory; offsets = src/dst misalignment; ratio = uvm_copy/memcpy)\n", SAMPLES);
    printf("  %-8s %-9s %14s %14s %8s\n", "size", "offsets", "memcpy GB/s", "uvm_copy GB/s", "ratio");
    for (size_t r = 0; r < NELEM(rows); r++) {
        size_t size = rows[r].size, iters = (64u << 20) / size;
        uint8_t *d = dst + rows[r].dst_off, *sr = src + rows[r].src_off;
        double tm[SAMPLES], tu[SAMPLES];
        for (int k = 0; k < SAMPLES; k++) {
            double t0 = now_ns();
            for (size_t i = 0; i < iters; i++) {
                memcpy_fn(d, sr, size);
                __asm__ volatile("" ::: "memory");
            }
            double t1 = now_ns();
            for (size_t i = 0; i < iters; i++) {
                uvm_copy(d, sr, size, NULL);
                __asm__ volatile("" ::: "memory");
            }
            double t2 = now_ns();
            tm[k] = (t1 - t0) / (double)iters;
            tu[k] = (t2 - t1) / (double)iters;
        }
        qsort(tm, SAMPLES, sizeof(double), cmp_double);
        qsort(tu, SAMPLES, sizeof(double), cmp_double);
        double m = tm[SAMPLES / 2], u = tu[SAMPLES / 2];
        char label[32], offs[48];
        if (size >= (1 << 20))
            snprintf(label, sizeof label, "%zu MiB", size >> 20);
        else if (size >= 1024)
            snprintf(label, sizeof label, "%zu KiB", size >> 10);
        else
            snprintf(label, sizeof label, "%zu B", size);
        snprintf(offs, sizeof offs, "+%zu/+%zu", rows[r].src_off, rows[r].dst_off);
        printf("  %-8s %-9s %14.1f %14.1f %8.2f\n", label, offs, (double)size / m, (double)size / u, m / u);
    }
    unmap(src, pages);
    unmap(dst, pages);
}

/* ------------------------------------------------------------------ main */

/* A broken fixup or forwarding can make a fault re-execute forever: fail, never hang. */
static void on_timeout(int sig)
{
    char line[160];
    int n = snprintf(line, sizeof line, "FAIL timeout: no result after %d s\nnative: %d passed, %d failed, %d skipped\n",
                     RUN_TIMEOUT_S, npass, nfail + 1, nskip);
    (void)!write(1, line, (size_t)n);
    _exit(128 + sig);
}

int main(int argc, char **argv)
{
    PG = (size_t)sysconf(_SC_PAGESIZE);
    init_avails();
    if (argc == 3 && !strcmp(argv[1], "--child"))
        return child_main(argv[2]);

    /* The throughput table is a benchmark: ./build.sh bench prints it (--bench-only), ./build.sh test does not (--no-bench). */
    if (argc == 2 && !strcmp(argv[1], "--bench-only")) {
        throughput();
        return 0;
    }
    int bench = !(argc == 2 && !strcmp(argv[1], "--no-bench"));
    signal(SIGALRM, on_timeout);
    alarm(RUN_TIMEOUT_S);

    /* Children first: they exercise uvm_install in fresh processes. */
    run("forward_to_previous_siginfo_handler_with_original_arguments", t_forward_to_siginfo_handler);
    run("forward_to_previous_plain_handler", t_forward_to_plain_handler);
    run("forward_user_sent_segv_to_sig_ign_is_ignored", t_forward_ignored_user_signal);
    run("previous_sig_dfl_foreign_segv_kills_with_sigsegv", t_default_segv_kills);
    run("previous_sig_dfl_foreign_sigbus_kills_with_sigbus", t_default_sigbus_kills);
    run("previous_sig_ign_foreign_segv_kills_instead_of_looping", t_ignored_segv_fault_kills);
    run("previous_sig_ign_foreign_sigbus_kills_instead_of_looping", t_ignored_sigbus_fault_kills);
    run("previous_sig_dfl_user_sent_segv_kills", t_default_user_segv_kills);
    run("previous_sa_resethand_handler_runs_once", t_resethand_runs_once);

    run("install_twice_returns_0_and_claims_count", t_install_twice_and_counters);
    run("forked_child_dereferencing_bad_pointer_dies_of_sigsegv", t_forked_child_dies_of_segv);

    run("copy_read_fault_prot_none_exact_to_the_byte", t_copy_read_prot_none);
    run("copy_read_fault_unmapped_exact_to_the_byte", t_copy_read_unmapped);
    run("copy_write_fault_prot_read_exact_to_the_byte", t_copy_write_prot_read);
    run("copy_write_fault_prot_none_exact_to_the_byte", t_copy_write_prot_none);
    run("copy_write_fault_unmapped_exact_to_the_byte", t_copy_write_unmapped);
    run("copy_both_sides_fault_first_byte_wins", t_copy_both_sides_fault);
    run("fill_zero_fault_prot_read_exact_to_the_byte", t_fill_prot_read);
    run("fill_zero_fault_prot_none_exact_to_the_byte", t_fill_prot_none);
    run("fill_zero_fault_unmapped_exact_to_the_byte", t_fill_unmapped);
    run("copy_and_fill_fault_on_first_page_write_nothing", t_fault_on_first_page_writes_nothing);
    run("copy_and_fill_without_fault_are_exact_unaligned", t_copy_and_fill_no_fault);
    run("null_fault_pointer_is_allowed", t_null_fault_pointer_is_allowed);
    run("sigbus_from_truncated_memfd_reports_sigbus", t_sigbus_truncated_memfd);
    run("load_store_each_width_on_good_memory", t_load_store_good_memory);
    run("load_fault_reports_read_and_leaves_out_untouched", t_load_faults_leave_out_untouched);
    run("store_fault_reports_write_and_leaves_memory_untouched", t_store_faults_leave_memory_untouched);
    run("cas_swap_and_no_swap", t_cas_swap_and_no_swap);
    run("cas_fault_leaves_memory_and_observed_untouched", t_cas_faults_leave_everything_untouched);
    run("swap_exchanges_and_reports_the_old_value", t_swap_exchanges_and_reports_the_old_value);
    run("swap_fault_leaves_memory_and_old_untouched", t_swap_faults_leave_everything_untouched);
    run("wild_pointers_null_kernel_noncanonical_fail_cleanly", t_wild_pointers);
    run("threads_fault_concurrently_with_correct_results", t_threads_fault_concurrently);

    if (bench)
        throughput();
    printf("native: %d passed, %d failed, %d skipped\n", npass, nfail, nskip);
    return nfail != 0;
}
