/* Tests of the installed libestargz through its public header only.
 *
 * Usage: test_api WORKDIR
 * WORKDIR is prepared by scripts/ffi-test.sh: tree/ (the source tree),
 * input.tar and input.tar.gz (tars of it), input.tar.sha256 (its digest),
 * has_xattr (present if tree/hello.txt carries user.test=value).
 * The mount test mounts with FUSE when run as root with /dev/fuse (required
 * when ESTARGZ_REQUIRE_FUSE is set).
 *
 * Every test prints "PASS name" or "FAIL name"; the exit status is non-zero
 * if any check failed. Built with ASan+UBSan and run under valgrind, so the
 * tests also check that nothing leaks or touches memory it should not.
 */
#define _GNU_SOURCE
#include <estargz.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The result codes are a stable ABI: pin every number. */
_Static_assert(ESTARGZ_OK == 0, "code");
_Static_assert(ESTARGZ_IO == 1, "code");
_Static_assert(ESTARGZ_TRUNCATED == 2, "code");
_Static_assert(ESTARGZ_INVALID_FOOTER == 3, "code");
_Static_assert(ESTARGZ_INVALID_TOC == 4, "code");
_Static_assert(ESTARGZ_INVALID_TAR == 5, "code");
_Static_assert(ESTARGZ_CORRUPT == 6, "code");
_Static_assert(ESTARGZ_DIGEST_MISMATCH == 7, "code");
_Static_assert(ESTARGZ_UNSAFE_PATH == 8, "code");
_Static_assert(ESTARGZ_NOT_FOUND == 9, "code");
_Static_assert(ESTARGZ_WRONG_TYPE == 10, "code");
_Static_assert(ESTARGZ_UNSUPPORTED == 11, "code");
_Static_assert(ESTARGZ_INVALID_ARGUMENT == 12, "code");
_Static_assert(ESTARGZ_LIMIT_EXCEEDED == 13, "code");
_Static_assert(ESTARGZ_INTERNAL == 14, "code");
_Static_assert(ESTARGZ_NETWORK == 15, "code");
_Static_assert(ESTARGZ_TIMEOUT == 16, "code");
_Static_assert(ESTARGZ_REGISTRY == 17, "code");
_Static_assert(ESTARGZ_UNAUTHORIZED == 18, "code");
_Static_assert(sizeof(estargz_result) == 4, "estargz_result is 32 bits");

static const char *workdir;
static const char *current_test;
static int test_failures, total_failures;

static void failed(int line, const char *what) {
  char msg[1024];
  estargz_last_error(msg, sizeof msg, NULL);
  fprintf(stderr, "  %s:%d: check failed: %s\n    last error: %s\n", current_test, line,
          what, msg);
  test_failures++;
}

#define CHECK(cond)                 \
  do {                              \
    if (!(cond)) failed(__LINE__, #cond); \
  } while (0)

#define CHECK_RC(expr, want)                                                     \
  do {                                                                           \
    estargz_result rc_ = (expr);                                                 \
    if (rc_ != (want)) {                                                         \
      char what_[512];                                                           \
      snprintf(what_, sizeof what_, "%s returned %s, want %s", #expr,            \
               estargz_result_name(rc_), estargz_result_name(want));             \
      failed(__LINE__, what_);                                                   \
    }                                                                            \
  } while (0)

#define OK(expr) CHECK_RC(expr, ESTARGZ_OK)
#define INVALID(expr) CHECK_RC(expr, ESTARGZ_INVALID_ARGUMENT)

/* ---------------------------------------------------------------- helpers */

static char *path_of(char *buf, const char *fmt, ...) {
  char rel[PATH_MAX / 2];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rel, sizeof rel, fmt, ap);
  va_end(ap);
  snprintf(buf, PATH_MAX, "%s/%s", workdir, rel);
  return buf;
}

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *data = malloc(n > 0 ? (size_t)n : 1);
  *len = fread(data, 1, (size_t)n, f);
  fclose(f);
  return data;
}

static void write_all(const char *path, const uint8_t *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (len && fwrite(data, 1, len, f) != len) abort();
  fclose(f);
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* A growable buffer used as builder output and read_at source. */
typedef struct {
  uint8_t *data;
  size_t len, cap;
  int fail_after; /* write callback: fail with ENOSPC after this many calls (-1: never) */
  int calls;
} membuf;

static int membuf_write(void *userdata, const uint8_t *buf, size_t len, size_t *out_n) {
  membuf *m = userdata;
  if (m->fail_after >= 0 && m->calls++ >= m->fail_after) return ENOSPC;
  if (m->len + len > m->cap) {
    m->cap = (m->len + len) * 2;
    m->data = realloc(m->data, m->cap);
  }
  memcpy(m->data + m->len, buf, len);
  m->len += len;
  *out_n = len;
  return 0;
}

/* Sequential source over a byte array, in small irregular pieces. */
typedef struct {
  const uint8_t *data;
  size_t len, pos;
  int fail;     /* return EIO once this many bytes were served */
  int overlong; /* claim more bytes than the buffer holds */
} seqsrc;

static int seq_read(void *userdata, uint8_t *buf, size_t len, size_t *out_n) {
  seqsrc *s = userdata;
  if (s->fail && s->pos >= (size_t)s->fail) return EIO;
  size_t n = s->len - s->pos;
  if (n > len) n = len;
  if (n > 7777) n = 7777;
  memcpy(buf, s->data + s->pos, n);
  s->pos += n;
  *out_n = s->overlong ? len + 1 : n;
  return 0;
}

/* Positional source over a byte array; counts calls and releases. */
typedef struct {
  const uint8_t *data;
  size_t len;
  int fail; /* return EIO */
  int overlong;
  atomic_int calls;
  atomic_int released;
} atsrc;

static int at_read(void *userdata, uint8_t *buf, size_t len, uint64_t offset, size_t *out_n) {
  atsrc *s = userdata;
  atomic_fetch_add(&s->calls, 1);
  if (s->fail) return EIO;
  if (offset >= s->len) {
    *out_n = 0;
    return 0;
  }
  size_t n = s->len - (size_t)offset;
  if (n > len) n = len;
  memcpy(buf, s->data + offset, n);
  *out_n = s->overlong ? len + 1 : n;
  return 0;
}

static void at_release(void *userdata) {
  atsrc *s = userdata;
  atomic_fetch_add(&s->released, 1);
}

static int is_digest(const char *d) {
  if (!d || strncmp(d, "sha256:", 7) != 0 || strlen(d) != 71) return 0;
  for (const char *p = d + 7; *p; p++)
    if (!strchr("0123456789abcdef", *p)) return 0;
  return 1;
}

/* Builds `in` (a path) with the given chunk size and level into `out` (a path). */
static estargz_result build_path(const char *in, const char *out, uint64_t chunk, uint32_t level,
                                 estargz_build_result **res) {
  estargz_builder *b = NULL;
  estargz_result rc = estargz_builder_new(&b);
  if (rc == ESTARGZ_OK) rc = estargz_builder_set_chunk_size(b, chunk);
  if (rc == ESTARGZ_OK) rc = estargz_builder_set_compression_level(b, level);
  if (rc == ESTARGZ_OK) rc = estargz_builder_set_input_path(b, in);
  if (rc == ESTARGZ_OK) rc = estargz_builder_set_output_path(b, out);
  if (rc == ESTARGZ_OK) rc = estargz_builder_run(b, res);
  estargz_builder_free(b);
  return rc;
}

/* Reads a whole regular file of the blob into a malloc'd buffer. */
static estargz_result read_entry(estargz_reader *r, const char *path, uint8_t **data, size_t *len,
                                 size_t step) {
  estargz_entry e;
  e.struct_size = sizeof e;
  estargz_result rc = estargz_reader_lookup(r, path, &e);
  if (rc != ESTARGZ_OK) return rc;
  *data = malloc(e.size + 1);
  *len = 0;
  for (;;) {
    size_t n = 0;
    size_t want = step;
    if (*len + want > e.size + 1) want = e.size + 1 - *len;
    rc = estargz_reader_read(r, e.id, *len, *data + *len, want, &n);
    if (rc != ESTARGZ_OK || n == 0) break;
    *len += n;
  }
  if (rc != ESTARGZ_OK) {
    free(*data);
    *data = NULL;
  }
  return rc;
}

/* Compares a file of the blob with the same file of tree/. */
static int same_as_tree(estargz_reader *r, const char *path, size_t step) {
  char p[PATH_MAX];
  size_t want_len = 0, got_len = 0;
  uint8_t *want = read_all(path_of(p, "tree/%s", path), &want_len), *got = NULL;
  estargz_result rc = read_entry(r, path, &got, &got_len, step);
  int same = want && rc == ESTARGZ_OK && got_len == want_len && memcmp(got, want, want_len) == 0;
  free(want);
  free(got);
  return same;
}

/* Field by field: the struct has tail padding that memcmp would read. */
static int same_entry(const estargz_entry *a, const estargz_entry *b) {
  return a->id == b->id && a->target_id == b->target_id && a->size == b->size &&
         a->uid == b->uid && a->gid == b->gid && a->mtime == b->mtime &&
         a->dev_major == b->dev_major && a->dev_minor == b->dev_minor &&
         a->xattr_count == b->xattr_count && a->kind == b->kind && a->mode == b->mode &&
         a->nlink == b->nlink;
}

static estargz_reader *open_blob(const char *path) {
  estargz_reader *r = NULL;
  if (estargz_reader_open_path(path, NULL, &r) != ESTARGZ_OK) return NULL;
  return r;
}

/* The blob every read test uses: input.tar, 64 KiB chunks. */
static char main_blob[PATH_MAX];
static char main_toc_digest[80];

/* ------------------------------------------------------------------ tests */

static void test_version(void) {
  CHECK(strcmp(estargz_version(), ESTARGZ_VERSION_STRING) == 0);
  char v[64];
  snprintf(v, sizeof v, "%d.%d.%d", ESTARGZ_VERSION_MAJOR, ESTARGZ_VERSION_MINOR,
           ESTARGZ_VERSION_PATCH);
  CHECK(strcmp(v, ESTARGZ_VERSION_STRING) == 0);
}

static void test_result_names(void) {
  static const char *names[] = {
      "ESTARGZ_OK",          "ESTARGZ_IO",          "ESTARGZ_TRUNCATED",
      "ESTARGZ_INVALID_FOOTER", "ESTARGZ_INVALID_TOC", "ESTARGZ_INVALID_TAR",
      "ESTARGZ_CORRUPT",     "ESTARGZ_DIGEST_MISMATCH", "ESTARGZ_UNSAFE_PATH",
      "ESTARGZ_NOT_FOUND",   "ESTARGZ_WRONG_TYPE",  "ESTARGZ_UNSUPPORTED",
      "ESTARGZ_INVALID_ARGUMENT", "ESTARGZ_LIMIT_EXCEEDED", "ESTARGZ_INTERNAL",
      "ESTARGZ_NETWORK",     "ESTARGZ_TIMEOUT",     "ESTARGZ_REGISTRY",
      "ESTARGZ_UNAUTHORIZED"};
  for (int i = 0; i < 19; i++) {
    CHECK(strcmp(estargz_result_name(i), names[i]) == 0);
    const char *d = estargz_result_description(i);
    CHECK(d && *d && strcmp(d, "unknown result code") != 0);
  }
  CHECK(strcmp(estargz_result_description(ESTARGZ_DIGEST_MISMATCH), "digest mismatch") == 0);
  CHECK(strcmp(estargz_result_name(-1), "ESTARGZ_UNKNOWN") == 0);
  CHECK(strcmp(estargz_result_name(19), "ESTARGZ_UNKNOWN") == 0);
  CHECK(strcmp(estargz_result_name(INT32_MAX), "ESTARGZ_UNKNOWN") == 0);
  CHECK(strcmp(estargz_result_description(INT32_MIN), "unknown result code") == 0);
}

static void *fresh_thread_last_error(void *arg) {
  char buf[64] = "x";
  size_t n = 99;
  *(estargz_result *)arg = estargz_last_error(buf, sizeof buf, &n);
  /* A thread that made no failing call has an empty message. */
  if (n != 0 || buf[0] != 0) *(estargz_result *)arg = ESTARGZ_INTERNAL;
  return NULL;
}

static void test_last_error(void) {
  INVALID(estargz_builder_new(NULL));
  char buf[256];
  size_t n = 0;
  OK(estargz_last_error(buf, sizeof buf, &n));
  CHECK(strstr(buf, "estargz_builder_new") == buf);
  CHECK(strstr(buf, "out_builder") != NULL);
  CHECK(n == strlen(buf));
  size_t full = n;
  /* Size query, then truncation with snprintf semantics. */
  n = 0;
  OK(estargz_last_error(NULL, 0, &n));
  CHECK(n == full);
  char small[5] = "zzzz";
  OK(estargz_last_error(small, sizeof small, &n));
  CHECK(n == full && strlen(small) == 4 && strncmp(small, "esta", 4) == 0);
  OK(estargz_last_error(small, 1, NULL));
  CHECK(small[0] == 0);
  INVALID(estargz_last_error(NULL, 5, &n));
  /* Successful calls leave the message alone. */
  estargz_builder *b = NULL;
  OK(estargz_builder_new(&b));
  OK(estargz_last_error(buf, sizeof buf, &n));
  CHECK(n == full);
  /* The per-handle message. */
  OK(estargz_builder_last_error(b, buf, sizeof buf, &n));
  CHECK(n == 0 && buf[0] == 0);
  INVALID(estargz_builder_set_compression_level(b, 99));
  OK(estargz_builder_last_error(b, buf, sizeof buf, &n));
  CHECK(strstr(buf, "estargz_builder_set_compression_level: compression level 99") == buf);
  INVALID(estargz_builder_last_error(NULL, buf, sizeof buf, &n));
  INVALID(estargz_builder_last_error(b, NULL, 3, &n));
  estargz_builder_free(b);
  /* The per-thread message is per thread. */
  pthread_t t;
  estargz_result rc = ESTARGZ_INTERNAL;
  CHECK(pthread_create(&t, NULL, fresh_thread_last_error, &rc) == 0);
  pthread_join(t, NULL);
  CHECK(rc == ESTARGZ_OK);
}

static void check_result(const estargz_build_result *res, const char *blob) {
  CHECK(is_digest(estargz_build_result_blob_digest(res)));
  CHECK(is_digest(estargz_build_result_toc_digest(res)));
  CHECK(is_digest(estargz_build_result_diff_id(res)));
  struct stat st;
  if (blob) {
    CHECK(stat(blob, &st) == 0 && (uint64_t)st.st_size == estargz_build_result_blob_size(res));
  }
  CHECK(estargz_build_result_uncompressed_size(res) > 0);
  CHECK(estargz_build_result_toc_entries(res) > 5);
}

static void test_build_defaults(void) {
  char in[PATH_MAX], out[PATH_MAX];
  estargz_build_result *res = NULL;
  estargz_builder *b = NULL;
  OK(estargz_builder_new(&b));
  OK(estargz_builder_set_input_path(b, path_of(in, "input.tar")));
  OK(estargz_builder_set_output_path(b, path_of(out, "out/default.esgz")));
  OK(estargz_builder_run(b, &res));
  check_result(res, out);
  uint64_t toc_offset = 0;
  CHECK(estargz_build_result_toc_offset(res, &toc_offset));
  CHECK(toc_offset > 0 && toc_offset < estargz_build_result_blob_size(res));
  CHECK(estargz_build_result_toc_offset(res, NULL));
  CHECK(!estargz_build_result_has_external_toc(res));
  size_t len = 99;
  CHECK(estargz_build_result_external_toc_data(res, &len) == NULL && len == 0);
  CHECK(estargz_build_result_missed_prioritized_count(res) == 0);
  CHECK(estargz_build_result_missed_prioritized(res, 0) == NULL);
  /* Input and output were used up by the run. */
  INVALID(estargz_builder_run(b, NULL));
  OK(estargz_builder_set_input_path(b, in));
  INVALID(estargz_builder_run(b, NULL));
  estargz_build_result_free(res);
  estargz_builder_free(b);

  /* The blob every read test uses. */
  OK(build_path(in, path_of(main_blob, "out/main.esgz"), 65536, 6, &res));
  snprintf(main_toc_digest, sizeof main_toc_digest, "%s", estargz_build_result_toc_digest(res));
  estargz_build_result_free(res);
}

/* The annotation `key` of a build result, or NULL. */
static const char *annotation(const estargz_build_result *res, const char *key) {
  const char *k = NULL, *v = NULL;
  for (size_t i = 0; estargz_build_result_annotation(res, i, &k, &v); i++) {
    if (strcmp(k, key) == 0) return v;
  }
  return NULL;
}

/* A position annotation's value equals `p` ("offset:compressed:uncompressed"
   and, for the manifest, ":1"). */
static int position_is(const char *value, estargz_frame_position p, int manifest) {
  char want[128];
  snprintf(want, sizeof want, "%" PRIu64 ":%" PRIu64 ":%" PRIu64 "%s", p.offset, p.compressed_len,
           p.uncompressed_len, manifest ? ":1" : "");
  return value && strcmp(value, want) == 0;
}

/* A zstd:chunked build result carries what a pusher needs for the layer
   descriptor, and it agrees with what the reader finds in the blob. */
static void test_build_zstd_chunked(void) {
  char in[PATH_MAX], p[PATH_MAX];
  path_of(in, "input.tar");
  static const struct {
    const char *format, *blob, *prefix;
    uint32_t generation;
  } cases[] = {
      {"zstd:chunked", "out/v2.zst", "io.github.containers.zstd-chunked.", 2},
      {"zstd:chunked-v1", "out/v1.zst", "io.containers.zstd-chunked.", 1},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    estargz_builder *b = NULL;
    estargz_build_result *res = NULL;
    OK(estargz_builder_new(&b));
    OK(estargz_builder_set_format(b, cases[c].format));
    OK(estargz_builder_set_input_path(b, in));
    OK(estargz_builder_set_output_path(b, path_of(p, cases[c].blob)));
    OK(estargz_builder_run(b, &res));
    estargz_builder_free(b);
    check_result(res, p);
    CHECK(strcmp(estargz_build_result_format(res), cases[c].format) == 0);
    CHECK(strcmp(estargz_build_result_media_type(res),
                 "application/vnd.oci.image.layer.v1.tar+zstd") == 0);

    estargz_reader *r = open_blob(p);
    CHECK(r != NULL);
    if (!r) {
      estargz_build_result_free(res);
      continue;
    }
    estargz_blob_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    OK(estargz_reader_info(r, &info));
    CHECK(info.format == ESTARGZ_FORMAT_ZSTD_CHUNKED);
    CHECK(info.zstd_chunked_generation == cases[c].generation);

    const char *checksum = estargz_build_result_manifest_checksum(res);
    CHECK(is_digest(checksum));
    CHECK(strcmp(checksum, estargz_reader_manifest_checksum(r)) == 0);
    estargz_frame_position built, read;
    memset(&built, 0xff, sizeof built);
    memset(&read, 0, sizeof read);
    CHECK(estargz_build_result_manifest_position(res, &built));
    CHECK(estargz_reader_manifest_position(r, &read));
    CHECK(memcmp(&built, &read, sizeof built) == 0);
    CHECK(built.offset == info.toc_offset);
    CHECK(built.offset + built.compressed_len < info.blob_size);
    CHECK(estargz_build_result_manifest_position(res, NULL));

    char key[128];
    snprintf(key, sizeof key, "%smanifest-checksum", cases[c].prefix);
    CHECK(annotation(res, key) && strcmp(annotation(res, key), checksum) == 0);
    snprintf(key, sizeof key, "%smanifest-position", cases[c].prefix);
    CHECK(position_is(annotation(res, key), read, 1));

    estargz_frame_position built_split, read_split;
    memset(&built_split, 0, sizeof built_split);
    memset(&read_split, 0, sizeof read_split);
    const char *toc_digest = annotation(res, "containerd.io/snapshot/stargz/toc.digest");
    const char *size = annotation(res, "io.containers.estargz.uncompressed-size");
    if (cases[c].generation == 2) {
      CHECK(estargz_build_result_tar_split_position(res, &built_split));
      CHECK(estargz_reader_tar_split_position(r, &read_split));
      CHECK(memcmp(&built_split, &read_split, sizeof built_split) == 0);
      CHECK(read_split.offset > built.offset && read_split.uncompressed_len > 0);
      CHECK(position_is(annotation(res, "io.github.containers.zstd-chunked.tarsplit-position"),
                        read_split, 0));
      /* containers/storage refuses a layer with the eStargz TOC digest too. */
      CHECK(toc_digest == NULL && size == NULL);
      CHECK(estargz_build_result_annotation_count(res) == 3);
    } else {
      CHECK(!estargz_build_result_tar_split_position(res, &built_split));
      CHECK(!estargz_reader_tar_split_position(r, &read_split));
      CHECK(toc_digest && strcmp(toc_digest, estargz_reader_toc_digest(r)) == 0);
      char want[32];
      snprintf(want, sizeof want, "%" PRIu64, estargz_build_result_uncompressed_size(res));
      CHECK(size && strcmp(size, want) == 0);
      CHECK(estargz_build_result_annotation_count(res) == 4);
    }
    const char *k = "unchanged";
    CHECK(!estargz_build_result_annotation(res, estargz_build_result_annotation_count(res), &k,
                                           NULL));
    CHECK(strcmp(k, "unchanged") == 0);
    OK(estargz_reader_verify(r, NULL));
    CHECK(same_as_tree(r, "dir/big.txt", 65536));
    estargz_reader_free(r);
    estargz_build_result_free(res);
  }

  /* eStargz: the gzip media type, the TOC digest and size annotations and
     no zstd:chunked facts; NULL handles answer the defaults. */
  estargz_build_result *res = NULL;
  OK(build_path(in, path_of(p, "out/annotated.esgz"), 65536, 6, &res));
  CHECK(strcmp(estargz_build_result_format(res), "estargz") == 0);
  CHECK(strcmp(estargz_build_result_media_type(res),
               "application/vnd.oci.image.layer.v1.tar+gzip") == 0);
  CHECK(estargz_build_result_manifest_checksum(res) == NULL);
  CHECK(!estargz_build_result_manifest_position(res, NULL));
  CHECK(!estargz_build_result_tar_split_position(res, NULL));
  CHECK(estargz_build_result_annotation_count(res) == 2);
  const char *toc_digest = annotation(res, "containerd.io/snapshot/stargz/toc.digest");
  CHECK(toc_digest && strcmp(toc_digest, estargz_build_result_toc_digest(res)) == 0);
  estargz_reader *r = open_blob(p);
  CHECK(r && estargz_reader_manifest_checksum(r) == NULL);
  CHECK(r && !estargz_reader_manifest_position(r, NULL));
  estargz_reader_free(r);
  estargz_build_result_free(res);
  CHECK(estargz_build_result_format(NULL) == NULL);
  CHECK(estargz_build_result_media_type(NULL) == NULL);
  CHECK(estargz_build_result_annotation_count(NULL) == 0);
  CHECK(!estargz_build_result_annotation(NULL, 0, NULL, NULL));
  CHECK(estargz_reader_manifest_checksum(NULL) == NULL);
  CHECK(!estargz_reader_tar_split_position(NULL, NULL));
}

static void test_build_inputs_outputs(void) {
  char in[PATH_MAX], gz[PATH_MAX], p[PATH_MAX];
  path_of(in, "input.tar");
  path_of(gz, "input.tar.gz");
  size_t tar_len = 0;
  uint8_t *tar = read_all(in, &tar_len);
  CHECK(tar != NULL);
  estargz_builder *b = NULL;
  OK(estargz_builder_new(&b));
  OK(estargz_builder_set_chunk_size(b, 65536));
  OK(estargz_builder_set_compression_level(b, 1));
  OK(estargz_builder_set_threads(b, 2));

  /* path -> path */
  estargz_build_result *res = NULL;
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_path(b, path_of(p, "out/io-path.esgz")));
  OK(estargz_builder_run(b, &res));
  check_result(res, p);
  char digest[80];
  snprintf(digest, sizeof digest, "%s", estargz_build_result_blob_digest(res));
  estargz_build_result_free(res);
  size_t path_len = 0;
  uint8_t *path_blob = read_all(p, &path_len);

  /* fd -> fd (gzip input: decompressed first, so the blob is the same) */
  int ifd = open(gz, O_RDONLY | O_CLOEXEC);
  int ofd = open(path_of(p, "out/io-fd.esgz"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  CHECK(ifd >= 0 && ofd >= 0);
  OK(estargz_builder_set_input_fd(b, ifd));
  OK(estargz_builder_set_output_fd(b, ofd));
  res = NULL;
  OK(estargz_builder_run(b, &res));
  close(ifd);
  close(ofd);
  check_result(res, p);
  CHECK(strcmp(estargz_build_result_blob_digest(res), digest) == 0);
  estargz_build_result_free(res);

  /* callback -> callback */
  seqsrc src = {.data = tar, .len = tar_len};
  membuf out = {.fail_after = -1};
  OK(estargz_builder_set_input_callback(b, seq_read, &src));
  OK(estargz_builder_set_output_callback(b, membuf_write, &out));
  res = NULL;
  OK(estargz_builder_run(b, &res));
  check_result(res, NULL);
  CHECK(strcmp(estargz_build_result_blob_digest(res), digest) == 0);
  CHECK(out.len == estargz_build_result_blob_size(res));
  CHECK(out.len == path_len && memcmp(out.data, path_blob, path_len) == 0);
  estargz_build_result_free(res);

  /* Mixed: gzip path -> callback, fd (plain) -> path; run without a result. */
  out.len = 0;
  OK(estargz_builder_set_input_path(b, gz));
  OK(estargz_builder_set_output_callback(b, membuf_write, &out));
  OK(estargz_builder_run(b, NULL));
  CHECK(out.len == path_len && memcmp(out.data, path_blob, path_len) == 0);
  ifd = open(in, O_RDONLY | O_CLOEXEC);
  OK(estargz_builder_set_input_fd(b, ifd));
  OK(estargz_builder_set_output_path(b, path_of(p, "out/io-mixed.esgz")));
  OK(estargz_builder_run(b, NULL));
  close(ifd);
  size_t mixed_len = 0;
  uint8_t *mixed = read_all(p, &mixed_len);
  CHECK(mixed_len == path_len && memcmp(mixed, path_blob, path_len) == 0);
  free(mixed);

  /* A directory as input. */
  OK(estargz_builder_set_input_path(b, path_of(p, "tree")));
  OK(estargz_builder_set_output_path(b, path_of(p, "out/io-dir.esgz")));
  res = NULL;
  OK(estargz_builder_run(b, &res));
  check_result(res, p);
  estargz_build_result_free(res);
  estargz_reader *r = open_blob(p);
  CHECK(r && same_as_tree(r, "dir/big.txt", 100000));
  estargz_reader_free(r);

  /* Failing callbacks and descriptors are I/O errors. */
  out.len = 0;
  out.fail_after = 2;
  out.calls = 0;
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_callback(b, membuf_write, &out));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_IO);
  char msg[512];
  OK(estargz_builder_last_error(b, msg, sizeof msg, NULL));
  CHECK(strstr(msg, "estargz_builder_run") == msg && strstr(msg, "space") != NULL);
  out.fail_after = -1;
  seqsrc failing = {.data = tar, .len = tar_len, .fail = 20000};
  OK(estargz_builder_set_input_callback(b, seq_read, &failing));
  OK(estargz_builder_set_output_callback(b, membuf_write, &out));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_IO);
  seqsrc liar = {.data = tar, .len = tar_len, .overlong = 1};
  OK(estargz_builder_set_input_callback(b, seq_read, &liar));
  OK(estargz_builder_set_output_callback(b, membuf_write, &out));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_IO);
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_fd(b, 1000000)); /* not open: EBADF */
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_IO);
  OK(estargz_builder_set_input_fd(b, 1000000));
  OK(estargz_builder_set_output_callback(b, membuf_write, &out));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_IO);
  OK(estargz_builder_set_input_path(b, path_of(p, "does-not-exist.tar")));
  OK(estargz_builder_set_output_callback(b, membuf_write, &out));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_IO);
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_path(b, path_of(p, "no-such-dir/x.esgz")));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_IO);

  estargz_builder_free(b);
  free(out.data);
  free(path_blob);
  free(tar);
}

static void test_build_options(void) {
  char in[PATH_MAX], p[PATH_MAX];
  path_of(in, "input.tar");
  estargz_builder *b = NULL;
  estargz_build_result *res = NULL;
  OK(estargz_builder_new(&b));

  /* Levels: above 22 refused at once; 13-22 are zstd's only, so an
     eStargz build with one fails when it runs. */
  INVALID(estargz_builder_set_compression_level(b, 23));
  OK(estargz_builder_set_compression_level(b, 13));
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_path(b, path_of(p, "out/level13.esgz")));
  INVALID(estargz_builder_run(b, NULL));
  OK(estargz_builder_set_compression_level(b, 12));
  OK(estargz_builder_set_compression_level(b, 0));
  OK(estargz_builder_set_chunk_size(b, 0)); /* default */
  OK(estargz_builder_set_threads(b, 0));

  /* min-chunk-size: small files share members; still reads and verifies. */
  OK(estargz_builder_set_min_chunk_size(b, 4096));
  OK(estargz_builder_set_chunk_size(b, 32768));
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_path(b, path_of(p, "out/minchunk.esgz")));
  OK(estargz_builder_run(b, &res));
  check_result(res, p);
  estargz_build_result_free(res);
  estargz_reader *r = open_blob(p);
  CHECK(r != NULL);
  OK(estargz_reader_verify(r, NULL));
  CHECK(same_as_tree(r, "dir/big.txt", 5000));
  CHECK(same_as_tree(r, "hello.txt", 3));
  estargz_reader_free(r);
  OK(estargz_builder_set_min_chunk_size(b, 0));

  /* Prioritized files go first, followed by the prefetch landmark. */
  OK(estargz_builder_add_prioritized_file(b, "dir/big.txt"));
  OK(estargz_builder_add_prioritized_file(b, "hello.txt"));
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_path(b, path_of(p, "out/prio.esgz")));
  res = NULL;
  OK(estargz_builder_run(b, &res));
  CHECK(estargz_build_result_missed_prioritized_count(res) == 0);
  estargz_build_result_free(res);
  r = open_blob(p);
  estargz_entry e;
  e.struct_size = sizeof e;
  OK(estargz_reader_lookup(r, ".prefetch.landmark", &e));
  CHECK_RC(estargz_reader_lookup(r, ".no.prefetch.landmark", &e), ESTARGZ_NOT_FOUND);
  CHECK(same_as_tree(r, "dir/big.txt", 65536));
  estargz_reader_free(r);

  /* A missing prioritized file fails the build (and leaves no output)... */
  OK(estargz_builder_add_prioritized_file(b, "no/such/file"));
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_path(b, path_of(p, "out/prio-missing.esgz")));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_INVALID_ARGUMENT);
  CHECK(!exists(p));
  /* ...unless allowed: then it is reported. */
  OK(estargz_builder_set_allow_missing_prioritized(b, true));
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_path(b, p));
  res = NULL;
  OK(estargz_builder_run(b, &res));
  CHECK(estargz_build_result_missed_prioritized_count(res) == 1);
  CHECK(strcmp(estargz_build_result_missed_prioritized(res, 0), "no/such/file") == 0);
  CHECK(estargz_build_result_missed_prioritized(res, 1) == NULL);
  estargz_build_result_free(res);
  estargz_builder_free(b);

  /* External TOC. */
  b = NULL;
  OK(estargz_builder_new(&b));
  OK(estargz_builder_set_external_toc(b, true));
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_path(b, path_of(p, "out/ext.esgz")));
  res = NULL;
  OK(estargz_builder_run(b, &res));
  check_result(res, p);
  uint64_t off = 0;
  CHECK(!estargz_build_result_toc_offset(res, &off));
  CHECK(estargz_build_result_has_external_toc(res));
  size_t toc_len = 0;
  const uint8_t *toc = estargz_build_result_external_toc_data(res, &toc_len);
  CHECK(toc != NULL && toc_len > 20 && toc[0] == 0x1f && toc[1] == 0x8b);
  CHECK(estargz_build_result_external_toc_data(res, NULL) == toc);
  r = NULL;
  CHECK_RC(estargz_reader_open_path(p, NULL, &r), ESTARGZ_INVALID_ARGUMENT);
  CHECK(r == NULL);
  estargz_open_options *o = NULL;
  OK(estargz_open_options_new(&o));
  OK(estargz_open_options_set_external_toc_data(o, toc, toc_len));
  OK(estargz_open_options_set_expected_toc_digest(o, estargz_build_result_toc_digest(res)));
  OK(estargz_reader_open_path(p, o, &r));
  estargz_blob_info info;
  info.struct_size = sizeof info;
  OK(estargz_reader_info(r, &info));
  CHECK(info.footer_kind == ESTARGZ_FOOTER_EXTERNAL_TOC && info.footer_size == 46);
  CHECK(info.toc_offset == 0 && info.has_external_toc);
  CHECK(same_as_tree(r, "dir/big.txt", 100000));
  estargz_reader_free(r);
  /* Clearing the external TOC again. */
  OK(estargz_open_options_set_external_toc_data(o, NULL, 0));
  r = NULL;
  CHECK_RC(estargz_reader_open_path(p, o, &r), ESTARGZ_INVALID_ARGUMENT);
  estargz_open_options_free(o);
  estargz_build_result_free(res);

  /* keep-diff-id: the decompressed blob is the input tar. */
  OK(estargz_builder_set_keep_diff_id(b, true));
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_path(b, path_of(p, "out/lossless.esgz")));
  res = NULL;
  OK(estargz_builder_run(b, &res));
  size_t sha_len = 0;
  char *sha = (char *)read_all(path_of(p, "input.tar.sha256"), &sha_len);
  char want[80];
  snprintf(want, sizeof want, "sha256:%.64s", sha ? sha : "");
  free(sha);
  CHECK(strcmp(estargz_build_result_diff_id(res), want) == 0);
  struct stat st;
  CHECK(stat(in, &st) == 0 && estargz_build_result_uncompressed_size(res) == (uint64_t)st.st_size);
  estargz_build_result_free(res);
  /* ...needs the external TOC, and cannot reorder. */
  OK(estargz_builder_set_external_toc(b, false));
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_path(b, path_of(p, "out/lossless-bad.esgz")));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_INVALID_ARGUMENT);
  OK(estargz_builder_set_external_toc(b, true));
  OK(estargz_builder_add_prioritized_file(b, "hello.txt"));
  OK(estargz_builder_set_input_path(b, in));
  OK(estargz_builder_set_output_path(b, p));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_INVALID_ARGUMENT);
  estargz_builder_free(b);

  /* Temp dir for streamed input. */
  b = NULL;
  OK(estargz_builder_new(&b));
  OK(estargz_builder_set_temp_dir(b, path_of(p, "no-such-tmp")));
  int fd = open(in, O_RDONLY | O_CLOEXEC);
  OK(estargz_builder_set_input_fd(b, fd));
  OK(estargz_builder_set_output_path(b, path_of(p, "out/tmp.esgz")));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_IO);
  close(fd);
  OK(estargz_builder_set_temp_dir(b, path_of(p, "tmp")));
  fd = open(in, O_RDONLY | O_CLOEXEC);
  OK(estargz_builder_set_input_fd(b, fd));
  OK(estargz_builder_set_output_path(b, path_of(p, "out/tmp.esgz")));
  OK(estargz_builder_run(b, NULL));
  close(fd);
  OK(estargz_builder_set_temp_dir(b, NULL));
  estargz_builder_free(b);
}

static void test_bad_inputs(void) {
  char p[PATH_MAX];
  estargz_builder *b = NULL;
  OK(estargz_builder_new(&b));
  membuf out = {.fail_after = -1};
  /* Not a tar. */
  uint8_t junk[3000];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 7 + 1);
  write_all(path_of(p, "junk.tar"), junk, sizeof junk);
  OK(estargz_builder_set_input_path(b, p));
  OK(estargz_builder_set_output_callback(b, membuf_write, &out));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_INVALID_TAR);
  /* zstd input is recognised and refused. */
  static const uint8_t zstd[] = {0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0};
  seqsrc zs = {.data = zstd, .len = sizeof zstd};
  OK(estargz_builder_set_input_callback(b, seq_read, &zs));
  OK(estargz_builder_set_output_callback(b, membuf_write, &out));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_UNSUPPORTED);
  /* Broken gzip input. */
  uint8_t badgz[100] = {0x1f, 0x8b, 0x08, 0};
  memset(badgz + 10, 0xff, 90);
  seqsrc gs = {.data = badgz, .len = sizeof badgz};
  OK(estargz_builder_set_input_callback(b, seq_read, &gs));
  OK(estargz_builder_set_output_callback(b, membuf_write, &out));
  CHECK_RC(estargz_builder_run(b, NULL), ESTARGZ_CORRUPT);
  estargz_builder_free(b);
  free(out.data);
}

static void check_open(estargz_reader *r, uint64_t blob_size) {
  CHECK(r != NULL);
  if (!r) return;
  CHECK(strcmp(estargz_reader_toc_digest(r), main_toc_digest) == 0);
  estargz_blob_info info;
  info.struct_size = sizeof info;
  OK(estargz_reader_info(r, &info));
  CHECK(info.blob_size == blob_size);
  CHECK(info.footer_kind == ESTARGZ_FOOTER_ESTARGZ && info.footer_size == 51);
  CHECK(info.toc_offset > 0 && info.toc_offset < blob_size && !info.has_external_toc);
  CHECK(info.toc_entries > 5 && info.entry_count > 5);
  CHECK(same_as_tree(r, "hello.txt", 4096));
  CHECK(same_as_tree(r, "dir/big.txt", 10000));
}

static void test_open_variants(void) {
  size_t len = 0;
  uint8_t *blob = read_all(main_blob, &len);
  CHECK(blob != NULL);

  estargz_reader *r = NULL;
  OK(estargz_reader_open_path(main_blob, NULL, &r));
  check_open(r, len);
  estargz_reader_free(r);

  /* fd: duplicated, so ours can be closed right away. */
  int fd = open(main_blob, O_RDONLY | O_CLOEXEC);
  r = NULL;
  OK(estargz_reader_open_fd(fd, NULL, &r));
  close(fd);
  check_open(r, len);
  estargz_reader_free(r);

  /* memory: copied, so ours can be freed right away. */
  uint8_t *copy = malloc(len);
  memcpy(copy, blob, len);
  r = NULL;
  OK(estargz_reader_open_memory(copy, len, NULL, &r));
  memset(copy, 0, len);
  free(copy);
  check_open(r, len);
  estargz_reader_free(r);

  /* callback: release runs once, when the reader is freed. */
  atsrc src = {.data = blob, .len = len};
  r = NULL;
  OK(estargz_reader_open_callback(at_read, at_release, &src, len, NULL, &r));
  check_open(r, len);
  CHECK(atomic_load(&src.calls) > 0);
  CHECK(atomic_load(&src.released) == 0);
  estargz_reader_free(r);
  CHECK(atomic_load(&src.released) == 1);

  /* ...and also when opening fails, whatever the reason. */
  atsrc failing = {.data = blob, .len = len, .fail = 1};
  r = NULL;
  CHECK_RC(estargz_reader_open_callback(at_read, at_release, &failing, len, NULL, &r),
           ESTARGZ_IO);
  CHECK(r == NULL && atomic_load(&failing.released) == 1);
  atsrc nul = {.data = blob, .len = len};
  INVALID(estargz_reader_open_callback(NULL, at_release, &nul, len, NULL, &r));
  INVALID(estargz_reader_open_callback(at_read, at_release, &nul, len, NULL, NULL));
  CHECK(atomic_load(&nul.released) == 2);
  /* No release callback is fine too. */
  r = NULL;
  OK(estargz_reader_open_callback(at_read, NULL, &src, len, NULL, &r));
  estargz_reader_free(r);
  CHECK(atomic_load(&src.released) == 1);
  /* A callback that claims more than it was asked for, or a source that is
   * shorter than declared. */
  atsrc liar = {.data = blob, .len = len, .overlong = 1};
  CHECK_RC(estargz_reader_open_callback(at_read, NULL, &liar, len, NULL, &r), ESTARGZ_IO);
  atsrc shorter = {.data = blob, .len = len};
  CHECK_RC(estargz_reader_open_callback(at_read, NULL, &shorter, len + 1000, NULL, &r),
           ESTARGZ_IO);

  /* Options: expected TOC digest, limits. */
  estargz_open_options *o = NULL;
  OK(estargz_open_options_new(&o));
  OK(estargz_open_options_set_expected_toc_digest(
      o, "sha256:0000000000000000000000000000000000000000000000000000000000000000"));
  r = NULL;
  CHECK_RC(estargz_reader_open_path(main_blob, o, &r), ESTARGZ_DIGEST_MISMATCH);
  CHECK(r == NULL);
  char msg[512];
  OK(estargz_last_error(msg, sizeof msg, NULL));
  CHECK(strstr(msg, "estargz_reader_open_path: digest mismatch for TOC") == msg);
  OK(estargz_open_options_set_expected_toc_digest(o, main_toc_digest));
  OK(estargz_reader_open_path(main_blob, o, &r));
  estargz_reader_free(r);
  OK(estargz_open_options_set_expected_toc_digest(o, NULL));
  OK(estargz_open_options_set_max_toc_size(o, 100));
  r = NULL;
  CHECK_RC(estargz_reader_open_memory(blob, len, o, &r), ESTARGZ_LIMIT_EXCEEDED);
  OK(estargz_open_options_set_max_toc_size(o, 0));
  OK(estargz_open_options_set_max_chunk_size(o, 1000));
  OK(estargz_reader_open_memory(blob, len, o, &r));
  estargz_entry e;
  e.struct_size = sizeof e;
  OK(estargz_reader_lookup(r, "dir/big.txt", &e));
  uint8_t buf[16];
  size_t n = 0;
  CHECK_RC(estargz_reader_read(r, e.id, 0, buf, sizeof buf, &n), ESTARGZ_LIMIT_EXCEEDED);
  estargz_reader_free(r);
  OK(estargz_open_options_set_max_chunk_size(o, 0));
  r = NULL;
  OK(estargz_reader_open_memory(blob, len, o, &r));
  OK(estargz_reader_read(r, e.id, 0, buf, sizeof buf, &n));
  CHECK(n == sizeof buf);
  estargz_reader_free(r);
  /* The tree limits: each fails this blob when small, 0 restores it. */
  estargz_result (*limits[])(estargz_open_options *, uint64_t) = {
      estargz_open_options_set_max_entries, estargz_open_options_set_max_path_depth,
      estargz_open_options_set_max_name_bytes};
  for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
    OK(limits[i](o, 1));
    r = NULL;
    CHECK_RC(estargz_reader_open_memory(blob, len, o, &r), ESTARGZ_LIMIT_EXCEEDED);
    CHECK(r == NULL);
    OK(limits[i](o, 0));
    OK(estargz_reader_open_memory(blob, len, o, &r));
    estargz_reader_free(r);
  }
  OK(estargz_open_options_set_max_member_inflation(o, 0));
  estargz_open_options_free(o);

  /* Files that are not there or not blobs. */
  char p[PATH_MAX];
  r = NULL;
  CHECK_RC(estargz_reader_open_path(path_of(p, "nope.esgz"), NULL, &r), ESTARGZ_IO);
  CHECK_RC(estargz_reader_open_path(path_of(p, "input.tar"), NULL, &r), ESTARGZ_INVALID_FOOTER);
  CHECK_RC(estargz_reader_open_fd(1000000, NULL, &r), ESTARGZ_IO);
  CHECK(r == NULL);
  free(blob);
}

static void test_verify(void) {
  estargz_reader *r = open_blob(main_blob);
  CHECK(r != NULL);
  uint64_t bytes = 0;
  OK(estargz_reader_verify(r, &bytes));
  struct stat a, b2;
  char p[PATH_MAX];
  CHECK(stat(path_of(p, "tree/dir/big.txt"), &a) == 0);
  CHECK(stat(path_of(p, "tree/hello.txt"), &b2) == 0);
  /* File bytes: big.txt, hello.txt and the 1-byte landmark (hard links once). */
  CHECK(bytes == (uint64_t)(a.st_size + b2.st_size) + 1);
  OK(estargz_reader_verify(r, NULL));
  OK(estargz_reader_verify_toc_digest(r, main_toc_digest));
  CHECK_RC(estargz_reader_verify_toc_digest(
               r, "sha256:0000000000000000000000000000000000000000000000000000000000000000"),
           ESTARGZ_DIGEST_MISMATCH);
  char msg[512];
  OK(estargz_reader_last_error(r, msg, sizeof msg, NULL));
  CHECK(strstr(msg, "estargz_reader_verify_toc_digest: digest mismatch") == msg);
  /* Not a digest at all: refused as an argument, not compared. */
  INVALID(estargz_reader_verify_toc_digest(r, "sha256:1234"));
  INVALID(estargz_reader_verify_toc_digest(r, NULL));
  estargz_reader_free(r);
}

static void test_lookup_and_entries(void) {
  estargz_reader *r = open_blob(main_blob);
  CHECK(r != NULL);
  char p[PATH_MAX];
  struct stat st;
  estargz_entry e, e2;
  e.struct_size = sizeof e;
  e2.struct_size = sizeof e2;

  /* Root, any spelling. */
  OK(estargz_reader_lookup(r, "", &e));
  CHECK(e.id == ESTARGZ_ROOT_ID && e.kind == ESTARGZ_ENTRY_DIR && e.target_id == e.id);
  OK(estargz_reader_lookup(r, "/", &e));
  CHECK(e.id == ESTARGZ_ROOT_ID);

  /* A regular file with a hard link to it (the tar is sorted by name, so
   * dir/hard holds the data and hello.txt links to it). */
  OK(estargz_reader_lookup(r, "dir/hard", &e));
  OK(estargz_reader_lookup(r, "/./dir//hard", &e2));
  CHECK(e.id == e2.id && e.id != ESTARGZ_ROOT_ID);
  CHECK(stat(path_of(p, "tree/hello.txt"), &st) == 0);
  CHECK(e.kind == ESTARGZ_ENTRY_REG && e.size == (uint64_t)st.st_size);
  CHECK(e.target_id == e.id);
  CHECK(e.mode == (st.st_mode & 07777) && e.mode == 0754);
  CHECK(e.uid == st.st_uid && e.gid == st.st_gid);
  CHECK(e.mtime == st.st_mtime);
  CHECK(e.nlink == 2);
  OK(estargz_reader_entry(r, e.id, &e2));
  CHECK(same_entry(&e, &e2));

  estargz_entry h;
  h.struct_size = sizeof h;
  OK(estargz_reader_lookup(r, "hello.txt", &h));
  CHECK(h.kind == ESTARGZ_ENTRY_HARDLINK && h.target_id == e.id && h.id != e.id);
  CHECK(h.size == e.size && h.mode == e.mode && h.nlink == 2 && h.mtime == e.mtime);
  char buf[PATH_MAX];
  size_t n = 0;
  OK(estargz_reader_entry_link_name(r, h.id, buf, sizeof buf, &n));
  CHECK(strcmp(buf, "dir/hard") == 0 && n == 8);

  /* Strings. */
  OK(estargz_reader_lookup(r, "dir//big.txt", &e));
  OK(estargz_reader_entry_path(r, e.id, buf, sizeof buf, &n));
  CHECK(strcmp(buf, "dir/big.txt") == 0 && n == 11);
  OK(estargz_reader_entry_name(r, e.id, buf, sizeof buf, &n));
  CHECK(strcmp(buf, "big.txt") == 0 && n == 7);
  char small[4];
  OK(estargz_reader_entry_path(r, e.id, small, sizeof small, &n));
  CHECK(strcmp(small, "dir") == 0 && n == 11);
  OK(estargz_reader_entry_path(r, e.id, NULL, 0, &n));
  CHECK(n == 11);
  OK(estargz_reader_entry_path(r, ESTARGZ_ROOT_ID, buf, sizeof buf, &n));
  CHECK(n == 0 && buf[0] == 0);
  OK(estargz_reader_entry_link_name(r, e.id, buf, sizeof buf, &n));
  CHECK(n == 0);
  CHECK(stat(path_of(p, "tree/dir/big.txt"), &st) == 0);
  struct passwd *pw = getpwuid(st.st_uid);
  OK(estargz_reader_entry_user_name(r, e.id, buf, sizeof buf, &n));
  if (pw) CHECK(strcmp(buf, pw->pw_name) == 0);
  OK(estargz_reader_entry_group_name(r, e.id, buf, sizeof buf, NULL));
  CHECK(strlen(buf) > 0);

  /* Symlink, fifo, empty file, directory. */
  OK(estargz_reader_lookup(r, "link", &e));
  CHECK(e.kind == ESTARGZ_ENTRY_SYMLINK && e.size == 0);
  OK(estargz_reader_entry_link_name(r, e.id, buf, sizeof buf, &n));
  CHECK(strcmp(buf, "hello.txt") == 0);
  OK(estargz_reader_lookup(r, "dir/fifo", &e));
  CHECK(e.kind == ESTARGZ_ENTRY_FIFO);
  OK(estargz_reader_lookup(r, "empty", &e));
  CHECK(e.kind == ESTARGZ_ENTRY_REG && e.size == 0);
  OK(estargz_reader_lookup(r, "dir/sub", &e));
  CHECK(e.kind == ESTARGZ_ENTRY_DIR && e.nlink == 2);
  OK(estargz_reader_lookup(r, "dir", &e));
  CHECK(e.kind == ESTARGZ_ENTRY_DIR && e.nlink == 3);

  /* Extended attributes (when the file system let the script set one). */
  OK(estargz_reader_lookup(r, "dir/hard", &e));
  if (exists(path_of(p, "has_xattr"))) {
    CHECK(e.xattr_count == 1);
    size_t nn = 0, vn = 0;
    OK(estargz_reader_entry_xattr(r, e.id, 0, NULL, 0, &nn, NULL, 0, &vn));
    CHECK(nn == 9 && vn == 5);
    char name[32];
    uint8_t value[32];
    OK(estargz_reader_entry_xattr(r, e.id, 0, name, sizeof name, &nn, value, sizeof value, &vn));
    CHECK(strcmp(name, "user.test") == 0 && vn == 5 && memcmp(value, "value", 5) == 0);
    OK(estargz_reader_entry_xattr(r, h.id, 0, name, sizeof name, NULL, value, 2, &vn));
    CHECK(vn == 5 && memcmp(value, "va", 2) == 0);
    CHECK_RC(estargz_reader_entry_xattr(r, e.id, 1, name, sizeof name, &nn, value, 32, &vn),
             ESTARGZ_NOT_FOUND);
    INVALID(estargz_reader_entry_xattr(r, e.id, 0, name, sizeof name, &nn, NULL, 3, &vn));
    INVALID(estargz_reader_entry_xattr(r, e.id, 0, NULL, 3, &nn, value, 3, &vn));
  } else {
    fprintf(stderr, "  (no user xattrs on this file system: xattr checks skipped)\n");
    CHECK_RC(estargz_reader_entry_xattr(r, e.id, 0, NULL, 0, NULL, NULL, 0, NULL),
             ESTARGZ_NOT_FOUND);
  }

  /* Misses and bad ids. */
  CHECK_RC(estargz_reader_lookup(r, "nope", &e), ESTARGZ_NOT_FOUND);
  CHECK_RC(estargz_reader_lookup(r, "hello.txt/x", &e), ESTARGZ_NOT_FOUND);
  char msg[256];
  OK(estargz_reader_last_error(r, msg, sizeof msg, NULL));
  CHECK(strcmp(msg, "estargz_reader_lookup: not found: hello.txt/x") == 0);
  estargz_blob_info info;
  info.struct_size = sizeof info;
  OK(estargz_reader_info(r, &info));
  INVALID(estargz_reader_entry(r, info.entry_count, &e));
  INVALID(estargz_reader_entry(r, UINT64_MAX, &e));
  INVALID(estargz_reader_entry_path(r, info.entry_count, buf, sizeof buf, &n));
  INVALID(estargz_reader_entry_name(r, UINT64_MAX, buf, sizeof buf, &n));
  INVALID(estargz_reader_entry_link_name(r, UINT64_MAX, buf, sizeof buf, &n));
  INVALID(estargz_reader_entry_user_name(r, UINT64_MAX, buf, sizeof buf, &n));
  INVALID(estargz_reader_entry_group_name(r, UINT64_MAX, buf, sizeof buf, &n));
  INVALID(estargz_reader_entry_xattr(r, UINT64_MAX, 0, NULL, 0, NULL, NULL, 0, NULL));
  INVALID(estargz_reader_lookup(r, "\xff\xfe", &e));
  /* Every id from 0 to entry_count-1 is valid. */
  for (uint64_t id = 0; id < info.entry_count; id++) OK(estargz_reader_entry(r, id, &e));
  estargz_reader_free(r);
}

/* The strings of an estargz_entry_details, checked against the one-string
 * getters. */
static void check_details(estargz_reader *r, const estargz_entry *e,
                          const estargz_entry_details *d, const char *buf, size_t n) {
  char want[PATH_MAX];
  size_t wn = 0;
  CHECK(d->struct_size == sizeof *d);
  CHECK(n == d->path_len + d->name_len + d->link_name_len + d->user_name_len +
                 d->group_name_len + 5);
  OK(estargz_reader_entry_path(r, e->id, want, sizeof want, &wn));
  CHECK(d->path_offset == 0 && d->path_len == wn && strcmp(buf + d->path_offset, want) == 0);
  OK(estargz_reader_entry_name(r, e->id, want, sizeof want, &wn));
  CHECK(d->name_offset == d->path_len + 1);
  CHECK(d->name_len == wn && strcmp(buf + d->name_offset, want) == 0);
  OK(estargz_reader_entry_link_name(r, e->id, want, sizeof want, &wn));
  CHECK(d->link_name_len == wn && strcmp(buf + d->link_name_offset, want) == 0);
  OK(estargz_reader_entry_user_name(r, e->id, want, sizeof want, &wn));
  CHECK(d->user_name_len == wn && strcmp(buf + d->user_name_offset, want) == 0);
  OK(estargz_reader_entry_group_name(r, e->id, want, sizeof want, &wn));
  CHECK(d->group_name_len == wn && strcmp(buf + d->group_name_offset, want) == 0);
  CHECK(d->group_name_offset + d->group_name_len + 1 == n);
  estargz_entry t;
  t.struct_size = sizeof t;
  OK(estargz_reader_entry(r, e->target_id, &t));
  CHECK(d->target_kind == t.kind && d->target_kind != ESTARGZ_ENTRY_HARDLINK);
}

static void test_entry_details(void) {
  estargz_reader *r = open_blob(main_blob);
  CHECK(r != NULL);
  estargz_entry e, want;
  estargz_entry_details d;
  e.struct_size = sizeof e;
  want.struct_size = sizeof want;
  d.struct_size = sizeof d;
  char buf[PATH_MAX];
  size_t n = 0;

  /* Every kind, by id: the same entry as estargz_reader_lookup, the same
   * strings as the getters. */
  const char *paths[] = {"", "dir", "dir/big.txt", "dir/hard", "hello.txt", "link", "dir/fifo",
                         "empty"};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    OK(estargz_reader_lookup(r, paths[i], &want));
    OK(estargz_reader_entry_details(r, want.id, &e, &d, buf, sizeof buf, &n));
    CHECK(same_entry(&e, &want));
    check_details(r, &e, &d, buf, n);
  }
  OK(estargz_reader_lookup(r, "hello.txt", &want));
  OK(estargz_reader_entry_details(r, want.id, &e, &d, buf, sizeof buf, &n));
  CHECK(e.kind == ESTARGZ_ENTRY_HARDLINK && d.target_kind == ESTARGZ_ENTRY_REG);
  CHECK(strcmp(buf + d.link_name_offset, "dir/hard") == 0);
  CHECK(strcmp(buf + d.name_offset, "hello.txt") == 0);
  OK(estargz_reader_lookup(r, "link", &want));
  OK(estargz_reader_entry_details(r, want.id, &e, &d, buf, sizeof buf, &n));
  CHECK(d.target_kind == ESTARGZ_ENTRY_SYMLINK && strcmp(buf + d.link_name_offset, "hello.txt") == 0);

  /* Too small: only *out_n is written. A size query; an exact fit. */
  OK(estargz_reader_lookup(r, "dir/big.txt", &want));
  size_t need = 0;
  OK(estargz_reader_entry_details(r, want.id, &e, &d, NULL, 0, &need));
  CHECK(need > strlen("dir/big.txt"));
  estargz_entry untouched;
  memset(&untouched, 0x5a, sizeof untouched);
  untouched.struct_size = sizeof untouched;
  estargz_entry_details d_untouched;
  memset(&d_untouched, 0x5a, sizeof d_untouched);
  d_untouched.struct_size = sizeof d_untouched;
  char small[8];
  memset(small, 'X', sizeof small);
  n = 0;
  OK(estargz_reader_entry_details(r, want.id, &untouched, &d_untouched, small, sizeof small, &n));
  CHECK(n == need && small[0] == 'X' && small[sizeof small - 1] == 'X');
  CHECK(untouched.id == 0x5a5a5a5a5a5a5a5aull && d_untouched.path_len == (size_t)0x5a5a5a5a5a5a5a5aull);
  char *exact = malloc(need);
  CHECK(exact != NULL);
  OK(estargz_reader_entry_details(r, want.id, &e, &d, exact, need, &n));
  CHECK(n == need && strcmp(exact, "dir/big.txt") == 0);
  check_details(r, &e, &d, exact, n);
  free(exact);

  /* Bad arguments. */
  INVALID(estargz_reader_entry_details(r, UINT64_MAX, &e, &d, buf, sizeof buf, &n));
  char msg[256];
  OK(estargz_reader_last_error(r, msg, sizeof msg, NULL));
  CHECK(strstr(msg, "estargz_reader_entry_details: entry id") == msg);
  INVALID(estargz_reader_entry_details(r, want.id, NULL, &d, buf, sizeof buf, &n));
  INVALID(estargz_reader_entry_details(r, want.id, &e, NULL, buf, sizeof buf, &n));
  INVALID(estargz_reader_entry_details(r, want.id, &e, &d, NULL, 4, &n));
  INVALID(estargz_reader_entry_details(r, want.id, &e, &d, buf, sizeof buf, NULL));
  INVALID(estargz_reader_entry_details(NULL, want.id, &e, &d, buf, sizeof buf, &n));
  d.struct_size = sizeof d - 1;
  INVALID(estargz_reader_entry_details(r, want.id, &e, &d, buf, sizeof buf, &n));
  d.struct_size = sizeof d;

  /* The iterator: starts with a 1-byte buffer and grows it to *out_n; a
   * call that does not fit, or fails, does not advance. */
  estargz_dir_iter *it = NULL;
  OK(estargz_reader_open_dir(r, ESTARGZ_ROOT_ID, &it));
  size_t cap = 1;
  char *grow = malloc(cap);
  CHECK(grow != NULL);
  char names[256] = "";
  int too_small = 0;
  for (;;) {
    bool done = true;
    d.struct_size = 0;
    INVALID(estargz_dir_iter_next_details(it, &e, &d, grow, cap, &n, &done));
    d.struct_size = sizeof d;
    OK(estargz_dir_iter_next_details(it, &e, &d, grow, cap, &n, &done));
    if (done) {
      CHECK(n == 0);
      break;
    }
    if (n > cap) {
      too_small++;
      cap = n;
      char *bigger = realloc(grow, cap);
      CHECK(bigger != NULL);
      grow = bigger;
      continue;
    }
    OK(estargz_reader_entry(r, e.id, &want));
    CHECK(same_entry(&e, &want));
    check_details(r, &e, &d, grow, n);
    strncat(names, grow + d.name_offset, sizeof names - strlen(names) - 2);
    strcat(names, "\n");
  }
  CHECK(too_small > 0);
  CHECK(strcmp(names, ".no.prefetch.landmark\ndir\nempty\nhello.txt\nlink\n") == 0);
  bool done = false;
  OK(estargz_dir_iter_next_details(it, &e, &d, grow, cap, &n, &done));
  CHECK(done && n == 0);
  free(grow);
  estargz_dir_iter_free(it);
  estargz_reader_free(r);
}

/* Lists directory `id` into names (newline-separated). */
static void list_dir(estargz_reader *r, uint64_t id, char *names, size_t cap) {
  estargz_dir_iter *it = NULL;
  names[0] = 0;
  OK(estargz_reader_open_dir(r, id, &it));
  for (;;) {
    estargz_entry e;
    e.struct_size = sizeof e;
    bool done = false;
    OK(estargz_dir_iter_next(it, &e, &done));
    if (done) break;
    char name[256];
    OK(estargz_reader_entry_name(r, e.id, name, sizeof name, NULL));
    strncat(names, name, cap - strlen(names) - 2);
    strcat(names, "\n");
  }
  estargz_dir_iter_free(it);
}

static void test_dir_iteration(void) {
  estargz_reader *r = open_blob(main_blob);
  CHECK(r != NULL);
  char names[1024];
  list_dir(r, ESTARGZ_ROOT_ID, names, sizeof names);
  CHECK(strcmp(names, ".no.prefetch.landmark\ndir\nempty\nhello.txt\nlink\n") == 0);
  estargz_entry d;
  d.struct_size = sizeof d;
  OK(estargz_reader_lookup(r, "dir", &d));
  list_dir(r, d.id, names, sizeof names);
  CHECK(strcmp(names, "big.txt\nfifo\nhard\nsub\n") == 0);
  OK(estargz_reader_lookup(r, "dir/sub", &d));
  list_dir(r, d.id, names, sizeof names);
  CHECK(strcmp(names, "") == 0);

  /* Not a directory; bad id. */
  estargz_entry f;
  f.struct_size = sizeof f;
  OK(estargz_reader_lookup(r, "hello.txt", &f));
  estargz_dir_iter *it = NULL;
  CHECK_RC(estargz_reader_open_dir(r, f.id, &it), ESTARGZ_WRONG_TYPE);
  CHECK(it == NULL);
  INVALID(estargz_reader_open_dir(r, 1u << 30, &it));

  /* The iterator outlives the reader; done stays done. */
  OK(estargz_reader_open_dir(r, ESTARGZ_ROOT_ID, &it));
  estargz_reader_free(r);
  int count = 0;
  for (;;) {
    estargz_entry e;
    e.struct_size = sizeof e;
    bool done = false;
    OK(estargz_dir_iter_next(it, &e, &done));
    if (done) break;
    count++;
  }
  CHECK(count == 5);
  estargz_entry e;
  e.struct_size = sizeof e;
  bool done = false;
  OK(estargz_dir_iter_next(it, &e, &done));
  CHECK(done);
  estargz_dir_iter_free(it);
}

static void test_read_ranges(void) {
  estargz_reader *r = open_blob(main_blob);
  CHECK(r != NULL);
  /* Whole file in steps that do and do not align with the 64 KiB chunks. */
  CHECK(same_as_tree(r, "hello.txt", 1));
  CHECK(same_as_tree(r, "dir/big.txt", 4099));
  CHECK(same_as_tree(r, "dir/big.txt", 65536));
  CHECK(same_as_tree(r, "dir/big.txt", 65537));
  CHECK(same_as_tree(r, "dir/big.txt", 1 << 22));
  CHECK(same_as_tree(r, "empty", 10));

  char p[PATH_MAX];
  size_t len = 0;
  uint8_t *want = read_all(path_of(p, "tree/dir/big.txt"), &len);
  estargz_entry e;
  e.struct_size = sizeof e;
  OK(estargz_reader_lookup(r, "dir/big.txt", &e));
  CHECK(e.size == len);
  uint8_t buf[200000];
  size_t n = 0;
  /* Across a chunk boundary. */
  OK(estargz_reader_read(r, e.id, 65536 - 100, buf, 300, &n));
  CHECK(n == 300 && memcmp(buf, want + 65536 - 100, 300) == 0);
  /* Several chunks at once. */
  OK(estargz_reader_read(r, e.id, 1000, buf, sizeof buf, &n));
  CHECK(n == sizeof buf && memcmp(buf, want + 1000, sizeof buf) == 0);
  /* Short at the end, 0 at and past it. */
  OK(estargz_reader_read(r, e.id, len - 10, buf, 100, &n));
  CHECK(n == 10 && memcmp(buf, want + len - 10, 10) == 0);
  OK(estargz_reader_read(r, e.id, len, buf, 100, &n));
  CHECK(n == 0);
  OK(estargz_reader_read(r, e.id, UINT64_MAX, buf, 100, &n));
  CHECK(n == 0);
  /* Zero-length reads need no buffer. */
  n = 99;
  OK(estargz_reader_read(r, e.id, 5, NULL, 0, &n));
  CHECK(n == 0);
  free(want);

  /* Hard links read their target; other kinds cannot be read. */
  estargz_entry h;
  h.struct_size = sizeof h;
  OK(estargz_reader_lookup(r, "dir/hard", &h));
  OK(estargz_reader_read(r, h.id, 0, buf, sizeof buf, &n));
  CHECK(n == h.size && h.size > 0);
  OK(estargz_reader_lookup(r, "dir", &e));
  CHECK_RC(estargz_reader_read(r, e.id, 0, buf, 10, &n), ESTARGZ_WRONG_TYPE);
  OK(estargz_reader_lookup(r, "link", &e));
  CHECK_RC(estargz_reader_read(r, e.id, 0, buf, 10, &n), ESTARGZ_WRONG_TYPE);
  OK(estargz_reader_lookup(r, "dir/fifo", &e));
  CHECK_RC(estargz_reader_read(r, e.id, 0, buf, 10, &n), ESTARGZ_WRONG_TYPE);
  INVALID(estargz_reader_read(r, UINT64_MAX, 0, buf, 10, &n));
  INVALID(estargz_reader_read(r, h.id, 0, NULL, 10, &n));
  INVALID(estargz_reader_read(r, h.id, 0, buf, 10, NULL));
  estargz_reader_free(r);
}

static int same_file(const char *a, const char *b) {
  size_t la = 0, lb = 0;
  uint8_t *da = read_all(a, &la), *db = read_all(b, &lb);
  int same = da && db && la == lb && memcmp(da, db, la) == 0;
  free(da);
  free(db);
  return same;
}

static void test_extract(void) {
  estargz_reader *r = open_blob(main_blob);
  CHECK(r != NULL);
  char dir[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
  estargz_extract_stats stats = {0};
  stats.struct_size = sizeof stats;
  OK(estargz_reader_extract(r, path_of(dir, "out/x"),
                            ESTARGZ_EXTRACT_NO_SAME_OWNER | ESTARGZ_EXTRACT_NO_XATTRS, &stats));
  /* hello.txt, empty, big.txt; dir, dir/sub; link, hard, fifo. */
  CHECK(stats.files == 3 && stats.dirs == 2 && stats.others == 3);
  CHECK(same_file(path_of(a, "out/x/hello.txt"), path_of(b, "tree/hello.txt")));
  CHECK(same_file(path_of(a, "out/x/dir/big.txt"), path_of(b, "tree/dir/big.txt")));
  CHECK(!exists(path_of(a, "out/x/.no.prefetch.landmark")));
  char target[64] = {0};
  CHECK(readlink(path_of(a, "out/x/link"), target, sizeof target - 1) == 9);
  CHECK(strcmp(target, "hello.txt") == 0);
  struct stat s1, s2;
  CHECK(stat(path_of(a, "out/x/hello.txt"), &s1) == 0 &&
        stat(path_of(b, "out/x/dir/hard"), &s2) == 0 && s1.st_ino == s2.st_ino);
  CHECK(stat(path_of(b, "tree/hello.txt"), &s2) == 0 && s1.st_mtime == s2.st_mtime &&
        (s1.st_mode & 07777) == (s2.st_mode & 07777));
  /* Default flags, landmarks included, no stats wanted. */
  OK(estargz_reader_extract(r, path_of(dir, "out/y"), ESTARGZ_EXTRACT_LANDMARKS, NULL));
  CHECK(exists(path_of(a, "out/y/.no.prefetch.landmark")));
  CHECK(same_file(path_of(a, "out/y/dir/big.txt"), path_of(b, "tree/dir/big.txt")));
  INVALID(estargz_reader_extract(r, dir, 8, NULL));
  INVALID(estargz_reader_extract(r, NULL, 0, NULL));
  INVALID(estargz_reader_extract(r, "", 0, NULL));
  /* A target that cannot be created. */
  CHECK_RC(estargz_reader_extract(r, path_of(dir, "input.tar/sub"), 0, NULL), ESTARGZ_IO);
  estargz_reader_free(r);
}

static uint8_t *memmem_ptr(uint8_t *hay, size_t hl, const uint8_t *needle, size_t nl) {
  return memmem(hay, hl, needle, nl);
}

static void test_corrupt_blob(void) {
  /* Level 0 stores file bytes verbatim, so a byte of big.txt can be found in
   * the blob and flipped: the chunk then fails its digest, while the gzip
   * framing and the TOC stay intact. */
  char in[PATH_MAX], p[PATH_MAX];
  estargz_build_result *res = NULL;
  OK(build_path(path_of(in, "input.tar"), path_of(p, "out/stored.esgz"), 65536, 0, &res));
  char toc_digest[80];
  snprintf(toc_digest, sizeof toc_digest, "%s", estargz_build_result_toc_digest(res));
  estargz_build_result_free(res);
  size_t len = 0, big_len = 0;
  uint8_t *blob = read_all(p, &len);
  uint8_t *big = read_all(path_of(p, "tree/dir/big.txt"), &big_len);
  CHECK(blob && big && big_len > 300000);
  uint8_t *hit = memmem_ptr(blob, len, big + 200000, 64);
  CHECK(hit != NULL);
  if (hit) hit[10] ^= 0x20;
  free(big);

  estargz_open_options *o = NULL;
  OK(estargz_open_options_new(&o));
  OK(estargz_open_options_set_expected_toc_digest(o, toc_digest));
  estargz_reader *r = NULL;
  OK(estargz_reader_open_memory(blob, len, o, &r)); /* the TOC is fine */
  estargz_open_options_free(o);
  uint8_t *data = NULL;
  size_t n = 0;
  CHECK_RC(read_entry(r, "dir/big.txt", &data, &n, 65536), ESTARGZ_DIGEST_MISMATCH);
  char msg[512];
  OK(estargz_reader_last_error(r, msg, sizeof msg, NULL));
  CHECK(strstr(msg, "estargz_reader_read: digest mismatch for chunk at file offset 196608") ==
        msg);
  /* Chunks before the damage still read; so do other files. */
  estargz_entry e;
  e.struct_size = sizeof e;
  OK(estargz_reader_lookup(r, "dir/big.txt", &e));
  uint8_t buf[100];
  OK(estargz_reader_read(r, e.id, 0, buf, sizeof buf, &n));
  CHECK(same_as_tree(r, "hello.txt", 100));
  CHECK_RC(estargz_reader_verify(r, NULL), ESTARGZ_DIGEST_MISMATCH);
  estargz_reader_free(r);

  /* Damage inside compressed data (level 9): inflating fails or the digest
   * does; either way no bad byte is handed out. */
  OK(build_path(in, path_of(p, "out/damaged.esgz"), 65536, 9, &res));
  uint64_t toc_offset = 0;
  CHECK(estargz_build_result_toc_offset(res, &toc_offset));
  estargz_build_result_free(res);
  size_t dlen = 0;
  uint8_t *dblob = read_all(p, &dlen);
  for (uint64_t i = toc_offset / 3; i < toc_offset / 3 + 16; i++) dblob[i] ^= 0x55;
  r = NULL;
  OK(estargz_reader_open_memory(dblob, dlen, NULL, &r));
  estargz_result rc = estargz_reader_verify(r, NULL);
  CHECK(rc == ESTARGZ_CORRUPT || rc == ESTARGZ_DIGEST_MISMATCH);
  estargz_reader_free(r);
  free(dblob);

  /* Truncated and foreign blobs fail to open. */
  size_t cuts[] = {0, 1, 10, 50, len / 2, len - 51, len - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    r = NULL;
    rc = estargz_reader_open_memory(blob, cuts[i], NULL, &r);
    CHECK(rc != ESTARGZ_OK && r == NULL);
  }
  CHECK_RC(estargz_reader_open_memory(blob, len - 1, NULL, &r), ESTARGZ_INVALID_FOOTER);
  /* The TOC member cut short (footer kept): the TOC cannot be read. */
  uint8_t *cut = malloc(len);
  estargz_reader *tr = NULL;
  OK(estargz_reader_open_memory(blob, len, NULL, &tr));
  estargz_blob_info info;
  info.struct_size = sizeof info;
  OK(estargz_reader_info(tr, &info));
  estargz_reader_free(tr);
  size_t toc_len = len - 51 - info.toc_offset;
  size_t new_toc = toc_len / 2;
  memcpy(cut, blob, info.toc_offset + new_toc);
  memcpy(cut + info.toc_offset + new_toc, blob + len - 51, 51);
  rc = estargz_reader_open_memory(cut, info.toc_offset + new_toc + 51, NULL, &r);
  CHECK(rc == ESTARGZ_INVALID_FOOTER || rc == ESTARGZ_INVALID_TOC || rc == ESTARGZ_TRUNCATED);
  free(cut);
  uint8_t junk[4096];
  memset(junk, 'x', sizeof junk);
  CHECK_RC(estargz_reader_open_memory(junk, sizeof junk, NULL, &r), ESTARGZ_INVALID_FOOTER);
  CHECK(r == NULL);
  free(blob);
}

/* The struct_size rule: every caller-filled struct is refused, untouched and
 * with nothing done, unless struct_size is a size the library knows. */
static void test_struct_size(void) {
  estargz_reader *r = open_blob(main_blob);
  CHECK(r != NULL);
  char msg[512];
  const size_t wrong[] = {0, 1, sizeof(estargz_entry) - 1, sizeof(estargz_entry) + 8,
                          SIZE_MAX};
  for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
    estargz_entry e;
    memset(&e, 0xab, sizeof e);
    e.struct_size = wrong[i];
    INVALID(estargz_reader_lookup(r, "hello.txt", &e));
    CHECK(e.struct_size == wrong[i] && e.id == 0xababababababababULL);
    INVALID(estargz_reader_entry(r, ESTARGZ_ROOT_ID, &e));
    CHECK(e.id == 0xababababababababULL);
  }
  estargz_entry e;
  e.struct_size = 3;
  INVALID(estargz_reader_lookup(r, "hello.txt", &e));
  OK(estargz_reader_last_error(r, msg, sizeof msg, NULL));
  CHECK(strstr(msg, "estargz_reader_lookup: `out_entry->struct_size` is 3") == msg);

  /* The iterator does not advance on a refused call. */
  estargz_dir_iter *it = NULL;
  OK(estargz_reader_open_dir(r, ESTARGZ_ROOT_ID, &it));
  bool done = true;
  e.struct_size = sizeof e + 1;
  INVALID(estargz_dir_iter_next(it, &e, &done));
  CHECK(done == true);
  estargz_entry first, again;
  first.struct_size = sizeof first;
  OK(estargz_dir_iter_next(it, &first, &done));
  CHECK(!done && first.struct_size == sizeof first);
  estargz_dir_iter_free(it);
  it = NULL;
  OK(estargz_reader_open_dir(r, ESTARGZ_ROOT_ID, &it));
  again.struct_size = sizeof again;
  OK(estargz_dir_iter_next(it, &again, &done));
  CHECK(!done && again.id == first.id);
  estargz_dir_iter_free(it);

  estargz_blob_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info - 4;
  INVALID(estargz_reader_info(r, &info));
  CHECK(info.blob_size == 0);
  info.struct_size = sizeof info;
  OK(estargz_reader_info(r, &info));
  CHECK(info.blob_size > 0 && info.struct_size == sizeof info);

  /* Extraction is refused before anything is written. */
  char dir[PATH_MAX];
  estargz_extract_stats stats = {0};
  stats.struct_size = 8;
  INVALID(estargz_reader_extract(r, path_of(dir, "out/struct_size"), 0, &stats));
  CHECK(!exists(dir) && stats.files == 0);
  estargz_reader_free(r);
}

static void test_null_arguments(void) {
  /* Releases accept NULL. */
  estargz_builder_free(NULL);
  estargz_build_result_free(NULL);
  estargz_open_options_free(NULL);
  estargz_reader_free(NULL);
  estargz_dir_iter_free(NULL);

  /* Builder. */
  INVALID(estargz_builder_new(NULL));
  INVALID(estargz_builder_set_chunk_size(NULL, 1));
  INVALID(estargz_builder_set_compression_level(NULL, 1));
  INVALID(estargz_builder_set_min_chunk_size(NULL, 1));
  INVALID(estargz_builder_add_prioritized_file(NULL, "a"));
  INVALID(estargz_builder_set_allow_missing_prioritized(NULL, true));
  INVALID(estargz_builder_set_external_toc(NULL, true));
  INVALID(estargz_builder_set_keep_diff_id(NULL, true));
  INVALID(estargz_builder_set_threads(NULL, 1));
  INVALID(estargz_builder_set_temp_dir(NULL, "/tmp"));
  INVALID(estargz_builder_set_input_path(NULL, "a"));
  INVALID(estargz_builder_set_input_fd(NULL, 0));
  INVALID(estargz_builder_set_input_callback(NULL, seq_read, NULL));
  INVALID(estargz_builder_set_output_path(NULL, "a"));
  INVALID(estargz_builder_set_output_fd(NULL, 1));
  INVALID(estargz_builder_set_output_callback(NULL, membuf_write, NULL));
  INVALID(estargz_builder_run(NULL, NULL));
  INVALID(estargz_builder_last_error(NULL, NULL, 0, NULL));
  estargz_builder *b = NULL;
  OK(estargz_builder_new(&b));
  INVALID(estargz_builder_add_prioritized_file(b, NULL));
  INVALID(estargz_builder_add_prioritized_file(b, "\xff"));
  INVALID(estargz_builder_set_input_path(b, NULL));
  INVALID(estargz_builder_set_input_path(b, ""));
  INVALID(estargz_builder_set_input_fd(b, -1));
  INVALID(estargz_builder_set_input_callback(b, NULL, NULL));
  INVALID(estargz_builder_set_output_path(b, NULL));
  INVALID(estargz_builder_set_output_fd(b, -1));
  INVALID(estargz_builder_set_output_callback(b, NULL, NULL));
  INVALID(estargz_builder_set_temp_dir(b, ""));
  char msg[256];
  OK(estargz_builder_last_error(b, msg, sizeof msg, NULL));
  CHECK(strcmp(msg, "estargz_builder_set_temp_dir: `dir` is empty") == 0);
  estargz_builder_free(b);

  /* Build results. */
  CHECK(estargz_build_result_blob_digest(NULL) == NULL);
  CHECK(estargz_build_result_toc_digest(NULL) == NULL);
  CHECK(estargz_build_result_diff_id(NULL) == NULL);
  CHECK(estargz_build_result_blob_size(NULL) == 0);
  CHECK(estargz_build_result_uncompressed_size(NULL) == 0);
  CHECK(estargz_build_result_toc_entries(NULL) == 0);
  uint64_t off = 7;
  CHECK(!estargz_build_result_toc_offset(NULL, &off) && off == 7);
  CHECK(!estargz_build_result_has_external_toc(NULL));
  size_t len = 7;
  CHECK(estargz_build_result_external_toc_data(NULL, &len) == NULL && len == 0);
  CHECK(estargz_build_result_external_toc_data(NULL, NULL) == NULL);
  CHECK(estargz_build_result_missed_prioritized_count(NULL) == 0);
  CHECK(estargz_build_result_missed_prioritized(NULL, 0) == NULL);

  /* Open options. */
  INVALID(estargz_open_options_new(NULL));
  INVALID(estargz_open_options_set_expected_toc_digest(NULL, "x"));
  INVALID(estargz_open_options_set_external_toc_data(NULL, NULL, 0));
  INVALID(estargz_open_options_set_max_toc_size(NULL, 1));
  INVALID(estargz_open_options_set_max_chunk_size(NULL, 1));
  INVALID(estargz_open_options_set_max_entries(NULL, 1));
  INVALID(estargz_open_options_set_max_path_depth(NULL, 1));
  INVALID(estargz_open_options_set_max_name_bytes(NULL, 1));
  INVALID(estargz_open_options_set_max_member_inflation(NULL, 1));
  estargz_open_options *o = NULL;
  OK(estargz_open_options_new(&o));
  INVALID(estargz_open_options_set_external_toc_data(o, NULL, 5));
  INVALID(estargz_open_options_set_expected_toc_digest(o, "\xc3\x28"));
  INVALID(estargz_open_options_set_expected_toc_digest(o, "sha256:ABC"));
  estargz_open_options_free(o);

  /* Opening. */
  estargz_reader *r = NULL;
  INVALID(estargz_reader_open_path(NULL, NULL, &r));
  INVALID(estargz_reader_open_path("", NULL, &r));
  INVALID(estargz_reader_open_path(main_blob, NULL, NULL));
  INVALID(estargz_reader_open_fd(-1, NULL, &r));
  INVALID(estargz_reader_open_fd(0, NULL, NULL));
  INVALID(estargz_reader_open_memory(NULL, 5, NULL, &r));
  INVALID(estargz_reader_open_memory((const uint8_t *)"x", 1, NULL, NULL));
  CHECK_RC(estargz_reader_open_memory(NULL, 0, NULL, &r), ESTARGZ_INVALID_FOOTER);
  INVALID(estargz_reader_open_callback(NULL, NULL, NULL, 0, NULL, &r));
  CHECK(r == NULL);

  /* Reader functions. */
  char buf[64];
  size_t n;
  estargz_entry e;
  e.struct_size = sizeof e;
  estargz_blob_info info;
  info.struct_size = sizeof info;
  bool done;
  CHECK(estargz_reader_toc_digest(NULL) == NULL);
  INVALID(estargz_reader_last_error(NULL, buf, sizeof buf, &n));
  INVALID(estargz_reader_info(NULL, &info));
  INVALID(estargz_reader_verify(NULL, NULL));
  INVALID(estargz_reader_verify_toc_digest(NULL, "x"));
  INVALID(estargz_reader_lookup(NULL, "x", &e));
  INVALID(estargz_reader_entry(NULL, 0, &e));
  INVALID(estargz_reader_entry_path(NULL, 0, buf, sizeof buf, &n));
  INVALID(estargz_reader_entry_name(NULL, 0, buf, sizeof buf, &n));
  INVALID(estargz_reader_entry_link_name(NULL, 0, buf, sizeof buf, &n));
  INVALID(estargz_reader_entry_user_name(NULL, 0, buf, sizeof buf, &n));
  INVALID(estargz_reader_entry_group_name(NULL, 0, buf, sizeof buf, &n));
  INVALID(estargz_reader_entry_xattr(NULL, 0, 0, NULL, 0, NULL, NULL, 0, NULL));
  INVALID(estargz_reader_read(NULL, 0, 0, (uint8_t *)buf, sizeof buf, &n));
  INVALID(estargz_reader_extract(NULL, "/tmp/x", 0, NULL));
  estargz_dir_iter *it = NULL;
  INVALID(estargz_reader_open_dir(NULL, 0, &it));
  INVALID(estargz_dir_iter_next(NULL, &e, &done));

  r = open_blob(main_blob);
  CHECK(r != NULL);
  INVALID(estargz_reader_last_error(r, NULL, 5, &n));
  INVALID(estargz_reader_info(r, NULL));
  INVALID(estargz_reader_lookup(r, NULL, &e));
  INVALID(estargz_reader_lookup(r, "hello.txt", NULL));
  INVALID(estargz_reader_entry(r, 0, NULL));
  INVALID(estargz_reader_entry_path(r, 0, NULL, 5, &n));
  INVALID(estargz_reader_entry_name(r, 0, NULL, 5, &n));
  INVALID(estargz_reader_entry_link_name(r, 0, NULL, 5, &n));
  INVALID(estargz_reader_entry_user_name(r, 0, NULL, 5, &n));
  INVALID(estargz_reader_entry_group_name(r, 0, NULL, 5, &n));
  INVALID(estargz_reader_open_dir(r, 0, NULL));
  OK(estargz_reader_open_dir(r, 0, &it));
  INVALID(estargz_dir_iter_next(it, NULL, &done));
  INVALID(estargz_dir_iter_next(it, &e, NULL));
  estargz_dir_iter_free(it);
  /* The message names the function and the argument. */
  OK(estargz_reader_last_error(r, buf, sizeof buf, &n));
  CHECK(strcmp(buf, "estargz_reader_open_dir: `out_iter` is NULL") == 0);
  estargz_reader_free(r);
}

/* --- threads */

typedef struct {
  estargz_reader *r;
  const uint8_t *want;
  size_t len;
  uint64_t id;
  unsigned seed;
  int bad;
} reader_job;

static void *reader_thread(void *arg) {
  reader_job *j = arg;
  uint8_t buf[100000];
  for (int i = 0; i < 200; i++) {
    j->seed = j->seed * 1103515245u + 12345u;
    size_t off = (j->seed >> 4) % j->len;
    size_t want = 1 + (j->seed >> 8) % sizeof buf;
    size_t n = 0;
    if (estargz_reader_read(j->r, j->id, off, buf, want, &n) != ESTARGZ_OK) {
      j->bad++;
      continue;
    }
    size_t expect = j->len - off < want ? j->len - off : want;
    if (n != expect || memcmp(buf, j->want + off, n) != 0) j->bad++;
    estargz_entry e;
    e.struct_size = sizeof e;
    if (estargz_reader_lookup(j->r, "hello.txt", &e) != ESTARGZ_OK) j->bad++;
    /* A failure on one thread does not disturb the others. */
    if (estargz_reader_lookup(j->r, "missing", &e) != ESTARGZ_NOT_FOUND) j->bad++;
    char msg[128];
    estargz_last_error(msg, sizeof msg, NULL);
    if (strcmp(msg, "estargz_reader_lookup: not found: missing") != 0) j->bad++;
  }
  if (j->seed % 2 && estargz_reader_verify(j->r, NULL) != ESTARGZ_OK) j->bad++;
  return NULL;
}

typedef struct {
  const char *in;
  char out[PATH_MAX];
  char digest[80];
  estargz_result rc;
} builder_job;

static void *builder_thread(void *arg) {
  builder_job *j = arg;
  estargz_build_result *res = NULL;
  j->rc = build_path(j->in, j->out, 65536, 6, &res);
  if (j->rc == ESTARGZ_OK)
    snprintf(j->digest, sizeof j->digest, "%s", estargz_build_result_blob_digest(res));
  estargz_build_result_free(res);
  return NULL;
}

static void test_threads(void) {
  char p[PATH_MAX];
  size_t len = 0, blob_len = 0;
  uint8_t *want = read_all(path_of(p, "tree/dir/big.txt"), &len);
  uint8_t *blob = read_all(main_blob, &blob_len);
  /* One reader over a file, one over a thread-safe callback. */
  estargz_reader *readers[2] = {open_blob(main_blob), NULL};
  atsrc src = {.data = blob, .len = blob_len};
  OK(estargz_reader_open_callback(at_read, at_release, &src, blob_len, NULL, &readers[1]));
  enum { N = 8 };
  pthread_t t[N];
  reader_job jobs[N];
  for (int i = 0; i < N; i++) {
    estargz_entry e;
    e.struct_size = sizeof e;
    OK(estargz_reader_lookup(readers[i % 2], "dir/big.txt", &e));
    jobs[i] = (reader_job){.r = readers[i % 2], .want = want, .len = len, .id = e.id,
                           .seed = (unsigned)i * 7919u + 1};
    CHECK(pthread_create(&t[i], NULL, reader_thread, &jobs[i]) == 0);
  }
  for (int i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    CHECK(jobs[i].bad == 0);
  }
  estargz_reader_free(readers[0]);
  estargz_reader_free(readers[1]);
  CHECK(atomic_load(&src.released) == 1);

  /* Builders on distinct handles in parallel give the same blob. */
  builder_job bj[2];
  char in[PATH_MAX];
  path_of(in, "input.tar");
  for (int i = 0; i < 2; i++) {
    bj[i] = (builder_job){.in = in};
    path_of(bj[i].out, "out/par%d.esgz", i);
    CHECK(pthread_create(&t[i], NULL, builder_thread, &bj[i]) == 0);
  }
  for (int i = 0; i < 2; i++) {
    pthread_join(t[i], NULL);
    CHECK(bj[i].rc == ESTARGZ_OK);
  }
  CHECK(strcmp(bj[0].digest, bj[1].digest) == 0 && is_digest(bj[0].digest));
  free(want);
  free(blob);
}

/* ------------------------------------------------------------------ main */

/* ---------------------------------------------------------------- mount */

/* The mount is only ever touched from other processes (sh, cmp, sleep):
 * the file system is served by threads of this one, and under valgrind a
 * syscall it does not expect to block (stat) would hold its global lock
 * while the serving thread waits for it. */

/* Runs a shell command (natively: valgrind does not follow exec). */
static int sh_ok(const char *fmt, ...) {
  char cmd[4 * PATH_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int rc = system(cmd);
  return rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

/* Whether a file system is mounted at `dir`, from /proc/self/mountinfo. */
static int is_mounted_at(const char *dir) {
  FILE *f = fopen("/proc/self/mountinfo", "r");
  if (!f) return 0;
  char line[8192], point[PATH_MAX];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) {
    if (sscanf(line, "%*s %*s %*s %*s %4095s", point) == 1 && strcmp(point, dir) == 0) found = 1;
  }
  fclose(f);
  return found;
}

static void test_mount(void) {
  char dir[PATH_MAX], mnt[PATH_MAX];
  mkdir(path_of(dir, "mnt"), 0755);
  CHECK(realpath(dir, mnt) != NULL);
  estargz_mount_options *o = NULL;
  OK(estargz_mount_options_new(&o));
  OK(estargz_mount_options_set_threads(o, 2));
  OK(estargz_mount_options_set_allow_other(o, false));
  OK(estargz_mount_options_set_background_fetch(o, false));
  OK(estargz_mount_options_set_passthrough(o, false));
  OK(estargz_mount_options_set_read_ahead_kb(o, 0));
  OK(estargz_mount_options_set_record_limit(o, 0));
  OK(estargz_mount_options_set_record_access(o, true));
  INVALID(estargz_mount_options_new(NULL));
  INVALID(estargz_mount_options_set_threads(NULL, 1));
  INVALID(estargz_mount_options_set_record_access(NULL, true));

  /* Argument errors and a wrong TOC digest fail before anything is mounted. */
  estargz_mount *m = NULL;
  INVALID(estargz_mount_local(NULL, NULL, mnt, o, &m));
  INVALID(estargz_mount_local(main_blob, NULL, NULL, o, &m));
  INVALID(estargz_mount_local(main_blob, NULL, mnt, o, NULL));
  INVALID(estargz_mount_remote("not a reference", NULL, NULL, mnt, NULL, o, &m));
  char wrong[80];
  snprintf(wrong, sizeof wrong, "sha256:%064d", 0);
  CHECK_RC(estargz_mount_local(main_blob, wrong, mnt, o, &m), ESTARGZ_DIGEST_MISMATCH);
  CHECK(m == NULL && !is_mounted_at(mnt));
  estargz_mount_info st = {.struct_size = sizeof st};
  INVALID(estargz_mount_status(NULL, &st));
  INVALID(estargz_mount_unmount(NULL));
  INVALID(estargz_mount_access_record(NULL, NULL, 0, NULL));
  CHECK(estargz_mount_toc_digest(NULL) == NULL);
  estargz_mount_free(NULL);

  if (geteuid() != 0 || access("/dev/fuse", R_OK | W_OK) != 0) {
    /* CI runs as root with /dev/fuse; elsewhere the mount itself is skipped. */
    CHECK(getenv("ESTARGZ_REQUIRE_FUSE") == NULL);
    printf("# mount: skipped (needs root and /dev/fuse)\n");
    estargz_mount_options_free(o);
    return;
  }

  OK(estargz_mount_local(main_blob, main_toc_digest, mnt, o, &m));
  if (m == NULL) {
    estargz_mount_options_free(o);
    return;
  }
  CHECK(is_mounted_at(mnt));
  CHECK(strcmp(estargz_mount_toc_digest(m), main_toc_digest) == 0);
  OK(estargz_mount_status(m, &st));
  CHECK(st.mounted && st.fetched_bytes == 0 && st.fetch_requests == 0);
  estargz_mount_info bad = {.struct_size = 3};
  INVALID(estargz_mount_status(m, &bad));

  /* The files read through the kernel equal the tree; writes are refused. */
  char tree[PATH_MAX];
  path_of(tree, "tree");
  CHECK(sh_ok("cmp -s '%s/hello.txt' '%s/hello.txt'", tree, mnt));
  CHECK(sh_ok("cmp -s '%s/dir/big.txt' '%s/dir/big.txt'", tree, mnt));
  CHECK(sh_ok("cmp -s '%s/empty' '%s/empty'", tree, mnt));
  CHECK(sh_ok("test \"$(readlink '%s/link')\" = hello.txt", mnt));
  CHECK(sh_ok("! touch '%s/new' 2>/dev/null", mnt));

  /* The access record lists the files read, in first-access order (the
   * readlink and the refused touch open no regular file); hello.txt is a
   * hard link to dir/hard in the blob, recorded as the data's entry. */
  size_t rec_n = 0;
  OK(estargz_mount_access_record(m, NULL, 0, &rec_n));
  CHECK(rec_n > 0);
  char *rec = malloc(rec_n + 1);
  CHECK(rec != NULL);
  if (rec) {
    size_t again = 0;
    OK(estargz_mount_access_record(m, rec, rec_n + 1, &again));
    CHECK(again == rec_n && strlen(rec) == rec_n);
    const char *h = strstr(rec, "\"dir/hard\""), *b = strstr(rec, "\"dir/big.txt\"");
    CHECK(strstr(rec, "\"version\":1") != NULL && strstr(rec, main_toc_digest) != NULL);
    CHECK(h != NULL && b != NULL && h < b && strstr(rec, "link") == NULL);
    free(rec);
  }

  /* Busy (a process works in it): refused, still served; then unmounted,
   * twice. */
  pid_t busy = fork();
  if (busy == 0) {
    execl("/bin/sh", "sh", "-c", "cd \"$1\" && exec sleep 60", "sh", mnt, (char *)NULL);
    _exit(127);
  }
  CHECK(busy > 0);
  char cwd_link[64], cwd[PATH_MAX];
  snprintf(cwd_link, sizeof cwd_link, "/proc/%d/cwd", (int)busy);
  for (int i = 0; i < 500; i++) { /* up to 5 s */
    ssize_t n = readlink(cwd_link, cwd, sizeof cwd - 1);
    if (n > 0 && (cwd[n] = 0, strcmp(cwd, mnt) == 0)) break;
    usleep(10000);
  }
  CHECK_RC(estargz_mount_unmount(m), ESTARGZ_IO);
  char msg[512];
  OK(estargz_mount_last_error(m, msg, sizeof msg, NULL));
  CHECK(strstr(msg, "estargz_mount_unmount: ") == msg && strstr(msg, mnt) != NULL);
  OK(estargz_mount_status(m, &st));
  CHECK(st.mounted && is_mounted_at(mnt));
  CHECK(sh_ok("head -c 6 '%s/dir/big.txt' | cmp -s - '%s/dir/big.txt' -n 6", mnt, tree));
  kill(busy, SIGKILL);
  waitpid(busy, NULL, 0);
  OK(estargz_mount_unmount(m));
  OK(estargz_mount_status(m, &st));
  CHECK(!st.mounted && !is_mounted_at(mnt));
  OK(estargz_mount_unmount(m));
  /* The record outlives the unmount; a short buffer gets a prefix. */
  char head[16];
  OK(estargz_mount_access_record(m, head, sizeof head, &rec_n));
  CHECK(rec_n > sizeof head && strncmp(head, "{\"version\":1", 12) == 0 && strlen(head) == sizeof head - 1);
  estargz_mount_free(m);

  /* Freeing a mounted handle unmounts it; without the option, no record. */
  m = NULL;
  OK(estargz_mount_local(main_blob, NULL, mnt, NULL, &m));
  CHECK(m && is_mounted_at(mnt) && sh_ok("cmp -s '%s/hello.txt' '%s/hello.txt'", tree, mnt));
  CHECK_RC(estargz_mount_access_record(m, NULL, 0, NULL), ESTARGZ_INVALID_ARGUMENT);
  estargz_mount_free(m);
  CHECK(!is_mounted_at(mnt));
  estargz_mount_options_free(o);
}

typedef struct {
  const char *name;
  void (*fn)(void);
} test_case;

/* registries.conf, certs.d and hosts.toml setters: files read at set
 * time fail there; hosts.toml mirrors are tried before the registry (the
 * mirrors themselves are tested against real registries from Go). */
static void test_remote_registry_files(const char *ref, unsigned port) {
  estargz_remote_options *o = NULL;
  OK(estargz_remote_options_new(&o));
  OK(estargz_remote_options_set_retries(o, 0));
  char p[PATH_MAX], msg[1024];
  /* registries.conf: read now; missing or bad files name themselves. */
  CHECK(estargz_remote_options_set_registries_conf(o, path_of(p, "no-such.conf")) !=
        ESTARGZ_OK);
  estargz_last_error(msg, sizeof msg, NULL);
  CHECK(strstr(msg, "no-such.conf") != NULL);
  CHECK(sh_ok("printf '[[registry]]\\nlocation = \"h\"\\nbad = 1\\n"
              "[[registry.mirror]]\\npull-from-mirror = \"never\"\\nlocation = \"m\"\\n' >'%s'",
              path_of(p, "bad.conf")));
  INVALID(estargz_remote_options_set_registries_conf(o, path_of(p, "bad.conf")));
  estargz_last_error(msg, sizeof msg, NULL);
  CHECK(strstr(msg, "bad.conf") != NULL && strstr(msg, "never") != NULL);
  CHECK(sh_ok("printf '[[registry]]\\nlocation = \"h.example\"\\n' >'%s'",
              path_of(p, "good.conf")));
  OK(estargz_remote_options_set_registries_conf(o, path_of(p, "good.conf")));
  OK(estargz_remote_options_set_registries_conf(o, NULL));
  INVALID(estargz_remote_options_set_registries_conf(o, ""));
  /* certs.d: any directory (read when a host needs it); NULL = defaults. */
  OK(estargz_remote_options_set_certs_dir(o, path_of(p, "certs.d")));
  OK(estargz_remote_options_set_certs_dir(o, NULL));
  INVALID(estargz_remote_options_set_certs_dir(o, ""));
  /* hosts.toml: a mirror on another closed port is tried first, then the
   * registry; both show in the error. */
  unsigned mirror_port = port == 1 ? 2 : port - 1;
  CHECK(sh_ok("mkdir -p '%s/_default' && printf '[host.\"http://127.0.0.1:%u\"]\\n"
              "capabilities = [\"pull\", \"resolve\"]\\n' >'%s/_default/hosts.toml'",
              path_of(p, "hosts.d"), mirror_port, path_of(p, "hosts.d")));
  OK(estargz_remote_options_set_hosts_dir(o, path_of(p, "hosts.d")));
  OK(estargz_remote_options_set_plain_http(o, true));
  estargz_reader *r = NULL;
  CHECK_RC(estargz_reader_open_remote(ref, NULL, o, &r), ESTARGZ_NETWORK);
  estargz_last_error(msg, sizeof msg, NULL);
  char mirror[32];
  snprintf(mirror, sizeof mirror, "127.0.0.1:%u", mirror_port);
  CHECK(strstr(msg, mirror) != NULL && strstr(msg, ref) != NULL);
  /* A bad hosts.toml fails the open, naming the file and the key. */
  CHECK(sh_ok("printf '[host.\"h\"]\\ncapabilities = [\"fetch\"]\\n' >'%s/_default/hosts.toml'",
              path_of(p, "hosts.d")));
  INVALID(estargz_reader_open_remote(ref, NULL, o, &r));
  estargz_last_error(msg, sizeof msg, NULL);
  CHECK(strstr(msg, "hosts.toml") != NULL && strstr(msg, "fetch") != NULL);
  CHECK(r == NULL);
  OK(estargz_remote_options_set_hosts_dir(o, NULL));
  INVALID(estargz_remote_options_set_hosts_dir(o, ""));
  estargz_remote_options_free(o);
}

/* The remote API without a registry: options, argument checks, and the
 * network errors an unreachable registry gives (the lazy reads themselves
 * are tested against real registries in tests/e2e/registry.rs and from Go
 * against an in-process one). */
static void test_remote(void) {
  estargz_remote_options_free(NULL);
  INVALID(estargz_remote_options_new(NULL));
  INVALID(estargz_remote_options_set_plain_http(NULL, true));
  INVALID(estargz_remote_options_add_insecure_registry(NULL, "h"));
  INVALID(estargz_remote_options_set_auth_file(NULL, NULL));
  INVALID(estargz_remote_options_set_request_timeout_ms(NULL, 1));
  INVALID(estargz_remote_options_set_retries(NULL, 1));
  INVALID(estargz_remote_options_set_platform(NULL, NULL));
  INVALID(estargz_remote_options_set_cache_dir(NULL, NULL, 0));
  INVALID(estargz_remote_options_set_memory_cache_size(NULL, 0));
  INVALID(estargz_remote_options_set_allow_unverified_toc(NULL, true));
  INVALID(estargz_remote_options_set_prefetch(NULL, true));
  INVALID(estargz_remote_options_set_registries_conf(NULL, NULL));
  INVALID(estargz_remote_options_set_certs_dir(NULL, NULL));
  INVALID(estargz_remote_options_set_hosts_dir(NULL, NULL));

  estargz_remote_options *o = NULL;
  OK(estargz_remote_options_new(&o));
  OK(estargz_remote_options_set_plain_http(o, true));
  OK(estargz_remote_options_add_insecure_registry(o, "127.0.0.1:5000"));
  INVALID(estargz_remote_options_add_insecure_registry(o, NULL));
  INVALID(estargz_remote_options_add_insecure_registry(o, ""));
  INVALID(estargz_remote_options_add_insecure_registry(o, "host/path"));
  char p[PATH_MAX];
  OK(estargz_remote_options_set_auth_file(o, path_of(p, "no-such-auth.json")));
  OK(estargz_remote_options_set_auth_file(o, NULL));
  INVALID(estargz_remote_options_set_auth_file(o, ""));
  OK(estargz_remote_options_set_platform(o, "linux/arm64/v8"));
  OK(estargz_remote_options_set_platform(o, NULL));
  INVALID(estargz_remote_options_set_platform(o, "linux"));
  INVALID(estargz_remote_options_set_platform(o, "\xff/x"));
  OK(estargz_remote_options_set_cache_dir(o, path_of(p, "remote-cache"), 1 << 20));
  OK(estargz_remote_options_set_cache_dir(o, NULL, 0));
  OK(estargz_remote_options_set_memory_cache_size(o, 1 << 20));
  OK(estargz_remote_options_set_allow_unverified_toc(o, false));
  OK(estargz_remote_options_set_prefetch(o, false));
  OK(estargz_remote_options_set_request_timeout_ms(o, 2000));
  OK(estargz_remote_options_set_retries(o, 0));

  /* Argument errors. */
  estargz_reader *r = NULL;
  INVALID(estargz_reader_open_remote(NULL, NULL, o, &r));
  INVALID(estargz_reader_open_remote("127.0.0.1:1/a:b", NULL, o, NULL));
  INVALID(estargz_reader_open_remote("not a reference", NULL, o, &r));
  INVALID(estargz_reader_open_remote("\xff", NULL, o, &r));
  INVALID(estargz_reader_open_remote("127.0.0.1:1/a:b", "\xff", o, &r));
  CHECK(r == NULL);

  /* A port nothing listens on: ESTARGZ_NETWORK, at once (no retries). */
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof addr;
  CHECK(s >= 0 && bind(s, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(s, (struct sockaddr *)&addr, &alen) == 0);
  close(s);
  char ref[64];
  snprintf(ref, sizeof ref, "127.0.0.1:%u/test/app:v1", (unsigned)ntohs(addr.sin_port));
  time_t start = time(NULL);
  CHECK_RC(estargz_reader_open_remote(ref, NULL, o, &r), ESTARGZ_NETWORK);
  CHECK(time(NULL) - start < 10);
  CHECK(r == NULL);
  char msg[512];
  estargz_last_error(msg, sizeof msg, NULL);
  CHECK(strstr(msg, "estargz_reader_open_remote: ") == msg);
  CHECK(strstr(msg, ref) != NULL);

  /* Opening layers ahead returns at once, also when the registry is down
   * (those opens fail in the background, and a mount opens the layer
   * itself); a layer already being opened is not started twice. */
  char d1[80], d2[80];
  snprintf(d1, sizeof d1, "sha256:%064d", 1);
  snprintf(d2, sizeof d2, "sha256:%064d", 2);
  const char *digests[] = {d1, d2, d1};
  size_t started = 99;
  start = time(NULL);
  OK(estargz_mount_open_ahead(o, ref, digests, 2, &started));
  CHECK(started == 2);
  OK(estargz_mount_open_ahead(o, ref, digests, 3, &started));
  CHECK(started == 0);
  OK(estargz_mount_open_ahead(o, ref, NULL, 0, NULL));
  CHECK(time(NULL) - start < 5);
  const char *bad_digest[] = {"sha256:short"};
  const char *null_digest[] = {NULL};
  INVALID(estargz_mount_open_ahead(o, NULL, digests, 2, NULL));
  INVALID(estargz_mount_open_ahead(o, "not a reference", digests, 2, NULL));
  INVALID(estargz_mount_open_ahead(o, ref, NULL, 2, NULL));
  INVALID(estargz_mount_open_ahead(o, ref, bad_digest, 1, NULL));
  INVALID(estargz_mount_open_ahead(o, ref, null_digest, 1, NULL));
  INVALID(estargz_mount_open_ahead(o, ref, digests, 1025, NULL));
  /* Let the failing opens end before the process does (valgrind). */
  usleep(500 * 1000);
  estargz_remote_options_free(o);

  /* NULL options: the defaults (HTTPS, which the closed port refuses too). */
  CHECK_RC(estargz_reader_open_remote(ref, "0", NULL, &r), ESTARGZ_NETWORK);

  test_remote_registry_files(ref, (unsigned)ntohs(addr.sin_port));
}

/* -------------------------------------------------------------- metrics */

/* GET /metrics on a connected socket: the whole answer, NUL-terminated,
 * in a malloc'd buffer (NULL on failure). */
static char *http_get_metrics(int s) {
  static const char req[] = "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n";
  if (write(s, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
    close(s);
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *out = malloc(cap);
  for (;;) {
    if (n + 1024 > cap) out = realloc(out, cap *= 2);
    ssize_t got = read(s, out + n, cap - n - 1);
    if (got <= 0) break;
    n += (size_t)got;
  }
  close(s);
  out[n] = 0;
  return out;
}

static char *scrape_tcp(const char *address) {
  unsigned port = 0;
  if (sscanf(address, "127.0.0.1:%u", &port) != 1) return NULL;
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons((uint16_t)port)};
  if (s < 0 || connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
    if (s >= 0) close(s);
    return NULL;
  }
  return http_get_metrics(s);
}

static char *scrape_unix(const char *path) {
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) {
    if (s >= 0) close(s);
    return NULL;
  }
  memcpy(addr.sun_path, path, strlen(path) + 1);
  if (s < 0 || connect(s, (struct sockaddr *)&addr, sizeof addr) != 0) {
    if (s >= 0) close(s);
    return NULL;
  }
  return http_get_metrics(s);
}

static void test_metrics(void) {
  /* Rendered into a buffer: sized with len 0, then copied whole. */
  size_t need = 0;
  OK(estargz_metrics_render(NULL, 0, &need));
  CHECK(need > 0);
  char *text = malloc(need + 4096);
  size_t n = 0;
  OK(estargz_metrics_render(text, need + 4096, &n));
  CHECK(n >= need && strlen(text) == n);
  CHECK(strstr(text, "# TYPE estargz_cache_hits_total counter\n") != NULL);
  CHECK(strstr(text, "# TYPE estargz_fetch_duration_seconds histogram\n") != NULL);
  CHECK(strstr(text, "estargz_fetch_duration_seconds_bucket{le=\"+Inf\"} ") != NULL);
  char small[8];
  OK(estargz_metrics_render(small, sizeof small, &n));
  CHECK(n > sizeof small && strlen(small) == sizeof small - 1);
  INVALID(estargz_metrics_render(NULL, 16, &n));
  free(text);

  /* Served over TCP on a port the system picks. */
  estargz_metrics_server *srv = NULL;
  OK(estargz_metrics_serve("127.0.0.1:0", &srv));
  CHECK(srv != NULL);
  char address[128];
  OK(estargz_metrics_server_address(srv, address, sizeof address, &n));
  CHECK(n == strlen(address) && strncmp(address, "127.0.0.1:", 10) == 0 &&
        strcmp(address, "127.0.0.1:0") != 0);
  char *got = scrape_tcp(address);
  CHECK(got != NULL && strncmp(got, "HTTP/1.1 200 OK\r\n", 17) == 0);
  CHECK(got != NULL && strstr(got, "# TYPE estargz_registry_requests_total counter\n") != NULL);
  free(got);
  /* An error on the handle is kept for estargz_metrics_server_last_error. */
  INVALID(estargz_metrics_server_address(srv, NULL, 8, NULL));
  char msg[256];
  OK(estargz_metrics_server_last_error(srv, msg, sizeof msg, NULL));
  CHECK(strstr(msg, "estargz_metrics_server_address: ") == msg);
  /* The port is taken while it serves; freed, it is closed. */
  estargz_metrics_server *again = NULL;
  CHECK_RC(estargz_metrics_serve(address, &again), ESTARGZ_IO);
  CHECK(again == NULL);
  estargz_metrics_server_free(srv);
  got = scrape_tcp(address);
  CHECK(got == NULL);
  free(got);

  /* Served on a unix socket, whose file goes with the server. */
  char sock[PATH_MAX];
  path_of(sock, "tmp/metrics.sock");
  OK(estargz_metrics_serve(sock, &srv));
  OK(estargz_metrics_server_address(srv, address, sizeof address, NULL));
  CHECK(strcmp(address, sock) == 0);
  got = scrape_unix(sock);
  CHECK(got != NULL && strstr(got, "\r\n\r\n# HELP estargz_registry_requests_total ") != NULL);
  free(got);
  estargz_metrics_server_free(srv);
  CHECK(!exists(sock));

  /* Bad addresses; a file that is not a socket is left alone. */
  srv = NULL;
  INVALID(estargz_metrics_serve("localhost", &srv));
  INVALID(estargz_metrics_serve(NULL, &srv));
  INVALID(estargz_metrics_serve("127.0.0.1:0", NULL));
  CHECK(srv == NULL);
  char file[PATH_MAX];
  path_of(file, "tmp/not-a-socket");
  write_all(file, (const uint8_t *)"keep", 4);
  CHECK_RC(estargz_metrics_serve(file, &srv), ESTARGZ_IO);
  estargz_last_error(msg, sizeof msg, NULL);
  CHECK(strstr(msg, "not a socket") != NULL);
  CHECK(exists(file));
  estargz_metrics_server_free(NULL);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s WORKDIR\n", argv[0]);
    return 2;
  }
  workdir = argv[1];
  char p[PATH_MAX];
  mkdir(path_of(p, "out"), 0755);
  mkdir(path_of(p, "tmp"), 0755);
  static const test_case tests[] = {
      {"version", test_version},
      {"result_names", test_result_names},
      {"last_error", test_last_error},
      {"build_defaults", test_build_defaults},
      {"build_inputs_outputs", test_build_inputs_outputs},
      {"build_options", test_build_options},
      {"build_zstd_chunked", test_build_zstd_chunked},
      {"bad_inputs", test_bad_inputs},
      {"open_variants", test_open_variants},
      {"verify", test_verify},
      {"lookup_and_entries", test_lookup_and_entries},
      {"dir_iteration", test_dir_iteration},
      {"entry_details", test_entry_details},
      {"read_ranges", test_read_ranges},
      {"extract", test_extract},
      {"struct_size", test_struct_size},
      {"corrupt_blob", test_corrupt_blob},
      {"null_arguments", test_null_arguments},
      {"threads", test_threads},
      {"remote", test_remote},
      {"mount", test_mount},
      {"metrics", test_metrics},
  };
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    current_test = tests[i].name;
    test_failures = 0;
    tests[i].fn();
    printf("%s %s\n", test_failures ? "FAIL" : "PASS", tests[i].name);
    fflush(stdout);
    total_failures += test_failures;
  }
  return total_failures ? 1 : 0;
}
