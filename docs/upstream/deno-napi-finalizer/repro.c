// Minimal reproduction: Deno runs napi_create_external_arraybuffer finalizers
// off the JS thread (V8's backing-store deleter), and N-API calls made there
// corrupt the isolate. Build: cc -shared -fPIC -O2 -I/usr/include/node repro.c -o repro.node
#define _GNU_SOURCE
#include <node_api.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static pid_t js_thread;
static atomic_int finalized, off_thread;

struct hint { napi_ref ref; };

static void finalize(napi_env env, void *data, void *p) {
  struct hint *hint = p;
  atomic_fetch_add(&finalized, 1);
  if (syscall(SYS_gettid) != js_thread) atomic_fetch_add(&off_thread, 1);
  // Allowed in any finalizer, basic ones included (node_api_basic_finalize).
  napi_delete_reference(env, hint->ref);
  free(data);
  free(hint);
}

// make(): an external ArrayBuffer of 64 bytes, with a weak reference to it.
static napi_value make(napi_env env, napi_callback_info info) {
  (void)info;
  struct hint *hint = calloc(1, sizeof *hint);
  napi_value ab;
  napi_create_external_arraybuffer(env, malloc(64), 64, finalize, hint, &ab);
  napi_create_reference(env, ab, 0, &hint->ref);
  return ab;
}

// detach(ab): napi_detach_arraybuffer.
static napi_value detach(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value ab;
  napi_get_cb_info(env, info, &argc, &ab, NULL, NULL);
  napi_detach_arraybuffer(env, ab);
  return NULL;
}

// stats(): [finalizers run, of which off the JS thread].
static napi_value stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out, v;
  napi_create_array_with_length(env, 2, &out);
  napi_create_int32(env, atomic_load(&finalized), &v);
  napi_set_element(env, out, 0, v);
  napi_create_int32(env, atomic_load(&off_thread), &v);
  napi_set_element(env, out, 1, v);
  return out;
}

NAPI_MODULE_INIT() {
  js_thread = syscall(SYS_gettid);
  napi_value f;
  napi_create_function(env, "make", NAPI_AUTO_LENGTH, make, NULL, &f);
  napi_set_named_property(env, exports, "make", f);
  napi_create_function(env, "detach", NAPI_AUTO_LENGTH, detach, NULL, &f);
  napi_set_named_property(env, exports, "detach", f);
  napi_create_function(env, "stats", NAPI_AUTO_LENGTH, stats, NULL, &f);
  napi_set_named_property(env, exports, "stats", f);
  return exports;
}
