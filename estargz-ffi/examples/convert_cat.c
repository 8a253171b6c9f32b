/* convert_cat: convert a tar to eStargz, then print one file of the blob.
 *
 *   cc convert_cat.c $(pkg-config --cflags --libs estargz) -o convert_cat
 *   ./convert_cat layer.tar layer.esgz etc/os-release
 */
#include <estargz.h>
#include <stdio.h>

static int fail(const char *what, estargz_result rc) {
  char msg[512];
  estargz_last_error(msg, sizeof msg, NULL);
  fprintf(stderr, "%s: %s (%s)\n", what, estargz_result_name(rc), msg);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s IN.tar OUT.esgz PATH\n", argv[0]);
    return 2;
  }

  /* Convert. */
  estargz_builder *builder = NULL;
  estargz_build_result *result = NULL;
  estargz_result rc = estargz_builder_new(&builder);
  if (rc == ESTARGZ_OK) rc = estargz_builder_set_input_path(builder, argv[1]);
  if (rc == ESTARGZ_OK) rc = estargz_builder_set_output_path(builder, argv[2]);
  if (rc == ESTARGZ_OK) rc = estargz_builder_run(builder, &result);
  estargz_builder_free(builder);
  if (rc != ESTARGZ_OK) return fail("convert", rc);
  fprintf(stderr, "blob %s\ntoc  %s\n", estargz_build_result_blob_digest(result),
          estargz_build_result_toc_digest(result));

  /* Open, checking the TOC digest the build reported. */
  estargz_open_options *opts = NULL;
  estargz_reader *reader = NULL;
  rc = estargz_open_options_new(&opts);
  if (rc == ESTARGZ_OK)
    rc = estargz_open_options_set_expected_toc_digest(
        opts, estargz_build_result_toc_digest(result));
  if (rc == ESTARGZ_OK) rc = estargz_reader_open_path(argv[2], opts, &reader);
  estargz_open_options_free(opts);
  estargz_build_result_free(result);
  if (rc != ESTARGZ_OK) return fail("open", rc);

  /* Cat: every byte is verified against its chunk digest before we get it. */
  estargz_entry entry;
  entry.struct_size = sizeof entry;
  rc = estargz_reader_lookup(reader, argv[3], &entry);
  uint8_t buf[65536];
  uint64_t offset = 0;
  size_t n = 0;
  while (rc == ESTARGZ_OK) {
    rc = estargz_reader_read(reader, entry.id, offset, buf, sizeof buf, &n);
    if (rc != ESTARGZ_OK || n == 0) break;
    fwrite(buf, 1, n, stdout);
    offset += n;
  }
  estargz_reader_free(reader);
  return rc == ESTARGZ_OK ? 0 : fail("cat", rc);
}
