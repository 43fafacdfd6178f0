// C baseline for `npm run bench`: the same operations mapped-region performs,
// as raw syscalls. Prints one JSON object: measure name -> median ns per
// operation (or GB/s for bandwidth), measured like the Node side: batches of
// operations timed with CLOCK_MONOTONIC, median over batches.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static size_t PAGE;
static int QUICK;
static int first_out = 1;

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, n, sizeof(double), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what) {
  fprintf(stderr, "baseline: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void emit(const char *name, double value) {
  printf("%s\"%s\": %.3f", first_out ? "{" : ", ", name, value);
  first_out = 0;
}

typedef void (*op_fn)(void *ctx);

// Median ns per op over `batches` batches of `per_batch` calls.
static double measure(op_fn fn, void *ctx, int batches, int per_batch) {
  double *t = malloc(sizeof(double) * batches);
  for (int i = 0; i < per_batch; i++) fn(ctx); // warm-up
  for (int b = 0; b < batches; b++) {
    double s = now_ns();
    for (int i = 0; i < per_batch; i++) fn(ctx);
    t[b] = (now_ns() - s) / per_batch;
  }
  double m = median(t, batches);
  free(t);
  return m;
}

struct pair_ctx {
  char *base;
  size_t size;
  int fd;
};

static void *reserve(size_t size) {
  void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) die("reserve");
  return p;
}

static void unreserve(char *at, size_t size) {
  if (mmap(at, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED) die("remove");
}

static void fd_pair(void *p) {
  struct pair_ctx *c = p;
  if (mmap(c->base, c->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, c->fd, 0) == MAP_FAILED) die("overlay");
  unreserve(c->base, c->size);
}

static void anon_pair(void *p) {
  struct pair_ctx *c = p;
  if (mmap(c->base, c->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED) die("anon overlay");
  unreserve(c->base, c->size);
}

static void do_msync(void *p) {
  if (msync(p, PAGE, MS_SYNC)) die("msync");
}

static void do_madvise(void *p) {
  if (madvise(p, PAGE, MADV_WILLNEED)) die("madvise");
}

static void reserve_tib(void *unused) {
  (void)unused;
  void *p = mmap(NULL, 1ULL << 40, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) die("reserve 1 TiB");
  munmap(p, 1ULL << 40);
}

struct copy_ctx {
  char *src;
  char *dst;
  size_t len;
};

static void do_copy(void *p) {
  struct copy_ctx *c = p;
  memcpy(c->dst, c->src, c->len);
  __asm__ volatile("" ::: "memory");
}

static int make_memfd(size_t size) {
  int fd = memfd_create("baseline", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, size)) die("memfd");
  return fd;
}

int main(int argc, char **argv) {
  PAGE = (size_t)sysconf(_SC_PAGESIZE);
  const char *ext4_file = argc > 1 ? argv[1] : NULL;
  QUICK = argc > 2 && strcmp(argv[2], "quick") == 0;
  // "bars": only the measures with a SPEC bar against C (overlay pairs, msync, madvise,
  // reserve), briefly; the bench runs it many times, paired with the Node side.
  int BARS = argc > 2 && strcmp(argv[2], "bars") == 0;
  int B = QUICK || BARS ? 11 : 31; // batches

  int fd = make_memfd(4 << 20);
  char *arena = reserve(64 << 20);
  struct pair_ctx pc = {arena + (8 << 20), PAGE, fd};
  emit("fd_pair_4k", measure(fd_pair, &pc, B, 200));
  pc.size = 2 << 20;
  emit("fd_pair_2m", measure(fd_pair, &pc, B, 200));
  pc.size = PAGE;
  emit("anon_pair", measure(anon_pair, &pc, B, 200));

  char *shm = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (shm == MAP_FAILED) die("map memfd");
  shm[0] = 1;
  emit("msync_memfd", measure(do_msync, shm, B, 2000));
  emit("madvise_willneed", measure(do_madvise, shm, B, 2000));
  if (ext4_file) {
    int f = open(ext4_file, O_RDWR);
    if (f < 0) die("open ext4 file");
    char *m = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (m == MAP_FAILED) die("map ext4 file");
    m[0] = 1;
    msync(m, PAGE, MS_SYNC);
    emit("msync_ext4", measure(do_msync, m, B, 200));
    munmap(m, PAGE);
    close(f);
  }
  emit("reserve_1t", measure(reserve_tib, NULL, B, 200));
  if (BARS) {
    printf("}\n");
    return 0;
  }

  // Bandwidth: memcpy 1 MiB chunks into a pre-faulted 256 MiB shared memfd mapping.
  size_t big = 256 << 20;
  int bfd = make_memfd(big);
  char *dst = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_SHARED, bfd, 0);
  if (dst == MAP_FAILED) die("map 256 MiB");
  madvise(dst, big, MADV_POPULATE_WRITE);
  char *src = malloc(1 << 20);
  memset(src, 7, 1 << 20);
  int rounds = QUICK ? 3 : 9;
  double *bw = malloc(sizeof(double) * rounds);
  for (int r = 0; r < rounds; r++) {
    double s = now_ns();
    for (size_t off = 0; off < big; off += 1 << 20) memcpy(dst + off, src, 1 << 20);
    __asm__ volatile("" ::: "memory");
    bw[r] = (double)big / (now_ns() - s); // bytes per ns == GB/s
  }
  emit("copy_bandwidth_gbps", median(bw, rounds));

  // Small copies out of / into the mapping (the limit for read()/write()).
  struct copy_ctx cc = {dst, src, 8};
  emit("read_8", measure(do_copy, &cc, B, 20000));
  cc.len = 4096;
  emit("read_4k", measure(do_copy, &cc, B, 5000));
  cc.len = 1 << 20;
  emit("read_1m", measure(do_copy, &cc, B, 50));
  struct copy_ctx wc = {src, dst, 8};
  emit("write_8", measure(do_copy, &wc, B, 20000));
  wc.len = 4096;
  emit("write_4k", measure(do_copy, &wc, B, 5000));
  wc.len = 1 << 20;
  emit("write_1m", measure(do_copy, &wc, B, 50));

  // First touch per page of a fresh memfd mapping.
  size_t touch = 64 << 20;
  double *tt = malloc(sizeof(double) * rounds);
  for (int r = 0; r < rounds; r++) {
    int tfd = make_memfd(touch);
    char *t = mmap(NULL, touch, PROT_READ | PROT_WRITE, MAP_SHARED, tfd, 0);
    if (t == MAP_FAILED) die("map touch");
    double s = now_ns();
    for (size_t off = 0; off < touch; off += PAGE) t[off] = 1;
    tt[r] = (now_ns() - s) / (double)(touch / PAGE);
    munmap(t, touch);
    close(tfd);
  }
  emit("first_touch", median(tt, rounds));

  // Populate 1 GiB of a memfd with MADV_POPULATE_WRITE.
  size_t gig = 1ULL << 30;
  int prounds = QUICK ? 1 : 3;
  double *pp = malloc(sizeof(double) * prounds);
  for (int r = 0; r < prounds; r++) {
    int pfd = make_memfd(gig);
    char *p = mmap(NULL, gig, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
    if (p == MAP_FAILED) die("map 1 GiB");
    double s = now_ns();
    if (madvise(p, gig, MADV_POPULATE_WRITE)) die("populate");
    pp[r] = (double)gig / (now_ns() - s);
    munmap(p, gig);
    close(pfd);
  }
  emit("populate_gbps", median(pp, prounds));

  // Overlay pair cost with N live overlays (gap pages in between).
  int counts[] = {10, 1000, 10000, 30000};
  for (int k = 0; k < 4; k++) {
    int n = counts[k];
    size_t span = (size_t)(2 * n + 64) * PAGE;
    char *a = reserve(span);
    for (int i = 0; i < n; i++) {
      if (mmap(a + (size_t)2 * i * PAGE, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, (off_t)(i % 1024) * PAGE) == MAP_FAILED) die("live overlay");
    }
    struct pair_ctx lc = {a + (size_t)(2 * n + 32) * PAGE, PAGE, fd};
    char name[32];
    snprintf(name, sizeof name, "live_pair_%d", n);
    emit(name, measure(fd_pair, &lc, B, 200));
    munmap(a, span);
  }
  printf("}\n");
  return 0;
}
