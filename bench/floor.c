// The in-process floor for `npm run bench`: a raw N-API addon, loaded into the
// same Node process as mapped-region, making exactly the syscalls of each
// operation at the addresses it is given — no validation, no bookkeeping.
// Built by bench/harness.mjs with the system cc against /usr/include/node;
// nothing is linked (Node resolves the napi_* symbols at load).
#define _GNU_SOURCE
#define NAPI_VERSION 9
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define RESERVE (MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)

static double arg_num(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d;
}

#define ARGS(n)                                                    \
  size_t argc = n;                                                 \
  napi_value argv[n];                                              \
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL)

static napi_value fail(napi_env env, const char *what) {
  napi_throw_error(env, NULL, what);
  return NULL;
}

// mapFd(addr, len, fd, prot): mmap(MAP_SHARED | MAP_FIXED) of fd at offset 0; with `checked`
// (mapFdChecked), an fstat of fd first: what an overlay of an fd number needs for its end-of-file
// check (the size, the type, the identity).
static napi_value map_fd_with(napi_env env, napi_callback_info info, int checked) {
  ARGS(4);
  void *addr = (void *)(uintptr_t)arg_num(env, argv[0]);
  size_t len = (size_t)arg_num(env, argv[1]);
  int fd = (int)arg_num(env, argv[2]);
  int prot = (int)arg_num(env, argv[3]);
  struct stat st;
  if (checked && fstat(fd, &st)) return fail(env, "fstat");
  if (mmap(addr, len, prot, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) return fail(env, "mmap fd");
  return NULL;
}

static napi_value map_fd(napi_env env, napi_callback_info info) { return map_fd_with(env, info, 0); }

// mapFdAt(addr, len, fd, prot, offset): fstat of fd, then mmap(MAP_SHARED | MAP_FIXED) of fd at
// `offset` — an overlay of an fd number that continues the file mapped before it.
static napi_value map_fd_at(napi_env env, napi_callback_info info) {
  ARGS(5);
  void *addr = (void *)(uintptr_t)arg_num(env, argv[0]);
  size_t len = (size_t)arg_num(env, argv[1]);
  int fd = (int)arg_num(env, argv[2]);
  int prot = (int)arg_num(env, argv[3]);
  off_t offset = (off_t)arg_num(env, argv[4]);
  struct stat st;
  if (fstat(fd, &st)) return fail(env, "fstat");
  if (mmap(addr, len, prot, MAP_SHARED | MAP_FIXED, fd, offset) == MAP_FAILED) return fail(env, "mmap fd");
  return NULL;
}

static napi_value map_fd_checked(napi_env env, napi_callback_info info) { return map_fd_with(env, info, 1); }

// mapAnon(addr, len, prot): mmap(MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED).
static napi_value map_anon(napi_env env, napi_callback_info info) {
  ARGS(3);
  void *addr = (void *)(uintptr_t)arg_num(env, argv[0]);
  size_t len = (size_t)arg_num(env, argv[1]);
  int prot = (int)arg_num(env, argv[2]);
  if (mmap(addr, len, prot, RESERVE | MAP_FIXED, -1, 0) == MAP_FAILED) return fail(env, "mmap anon");
  return NULL;
}

// hole(addr, len): a PROT_NONE reservation in place, as removeMapping makes.
static napi_value hole(napi_env env, napi_callback_info info) {
  ARGS(2);
  void *addr = (void *)(uintptr_t)arg_num(env, argv[0]);
  size_t len = (size_t)arg_num(env, argv[1]);
  if (mmap(addr, len, PROT_NONE, RESERVE | MAP_FIXED, -1, 0) == MAP_FAILED) return fail(env, "mmap hole");
  return NULL;
}

// reserve(len) -> addr: a PROT_NONE reservation anywhere.
static napi_value reserve(napi_env env, napi_callback_info info) {
  ARGS(1);
  size_t len = (size_t)arg_num(env, argv[0]);
  void *p = mmap(NULL, len, PROT_NONE, RESERVE, -1, 0);
  if (p == MAP_FAILED) return fail(env, "mmap reserve");
  napi_value out;
  napi_create_double(env, (double)(uintptr_t)p, &out);
  return out;
}

// unmap(addr, len).
static napi_value unmap(napi_env env, napi_callback_info info) {
  ARGS(2);
  munmap((void *)(uintptr_t)arg_num(env, argv[0]), (size_t)arg_num(env, argv[1]));
  return NULL;
}

// msync(addr, len): MS_SYNC.
static napi_value do_msync(napi_env env, napi_callback_info info) {
  ARGS(2);
  if (msync((void *)(uintptr_t)arg_num(env, argv[0]), (size_t)arg_num(env, argv[1]), MS_SYNC)) return fail(env, "msync");
  return NULL;
}

// madvise(addr, len, advice).
static napi_value do_madvise(napi_env env, napi_callback_info info) {
  ARGS(3);
  if (madvise((void *)(uintptr_t)arg_num(env, argv[0]), (size_t)arg_num(env, argv[1]), (int)arg_num(env, argv[2])))
    return fail(env, "madvise");
  return NULL;
}

static void finalize_view(napi_env env, void *data, void *hint) {
  (void)data;
  napi_ref *slot = hint;
  napi_delete_reference(env, *slot);
  free(slot);
}

// view(addr, len): an external Buffer over the memory with a weak reference to
// its ArrayBuffer (what a package that can detach views must keep).
static napi_value view(napi_env env, napi_callback_info info) {
  ARGS(2);
  void *addr = (void *)(uintptr_t)arg_num(env, argv[0]);
  size_t len = (size_t)arg_num(env, argv[1]);
  napi_value buffer, array_buffer;
  // The finalizer's hint holds the reference, made once the buffer exists.
  napi_ref *slot = malloc(sizeof *slot);
  if (napi_create_external_buffer(env, len, addr, finalize_view, slot, &buffer) != napi_ok) return NULL;
  napi_get_typedarray_info(env, buffer, NULL, NULL, NULL, &array_buffer, NULL);
  napi_create_reference(env, array_buffer, 0, slot);
  return buffer;
}

// Copies between addr and a typed array: into it (`readInto`) or out of it (`write`).
static napi_value copy(napi_env env, napi_callback_info info, int into) {
  ARGS(2);
  void *addr = (void *)(uintptr_t)arg_num(env, argv[0]);
  void *data;
  size_t len;
  napi_get_typedarray_info(env, argv[1], NULL, &len, &data, NULL, NULL);
  if (into) memmove(data, addr, len);
  else memmove(addr, data, len);
  return NULL;
}

// readInto(addr, target): copies target.length bytes from addr.
static napi_value read_into(napi_env env, napi_callback_info info) { return copy(env, info, 1); }

// write(addr, source): copies source.length bytes to addr.
static napi_value write_from(napi_env env, napi_callback_info info) { return copy(env, info, 0); }

// All of [addr, addr + len) written to fd at offset 0 (`out`), or len bytes of fd from offset 0
// read into it: pwrite or pread until done.
static napi_value whole(napi_env env, napi_callback_info info, int out) {
  ARGS(3);
  int fd = (int)arg_num(env, argv[0]);
  char *addr = (char *)(uintptr_t)arg_num(env, argv[1]);
  size_t len = (size_t)arg_num(env, argv[2]);
  size_t done = 0;
  while (done < len) {
    ssize_t n = out ? pwrite(fd, addr + done, len - done, (off_t)done) : pread(fd, addr + done, len - done, (off_t)done);
    if (n <= 0) return fail(env, out ? "pwrite" : "pread");
    done += (size_t)n;
  }
  return NULL;
}

// dump(fd, addr, len): the floor of a snapshot's dump, from the same memory into the same file.
static napi_value dump(napi_env env, napi_callback_info info) { return whole(env, info, 1); }

// load(fd, addr, len): the floor of an eager restore: the file read into anonymous memory, no pager.
static napi_value load(napi_env env, napi_callback_info info) { return whole(env, info, 0); }

NAPI_MODULE_INIT() {
  struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
      {"mapFd", map_fd},     {"mapFdChecked", map_fd_checked}, {"mapFdAt", map_fd_at}, {"mapAnon", map_anon},     {"hole", hole},         {"reserve", reserve},
      {"unmap", unmap},      {"msync", do_msync},       {"madvise", do_madvise}, {"view", view},
      {"readInto", read_into}, {"write", write_from}, {"dump", dump}, {"load", load},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn);
    napi_set_named_property(env, exports, fns[i].name, fn);
  }
  return exports;
}
