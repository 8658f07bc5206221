/*
 * The C program the tests build and run (tests/c_program.rs, under the address
 * sanitizer and valgrind): the seed's get_counter example, then refused calls that
 * must answer an error code and a message instead of aborting, then a durable
 * engine reopened. Exits 0 when every check holds; prints the first that fails.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relcount.h"

static int failures = 0;

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__,      \
              __LINE__, #cond, rc_last_error());                                    \
      failures++;                                                                   \
    }                                                                               \
  } while (0)

#define CHECK_STATUS(call, want) CHECK((call) == (want))

static RcWeight int_weight(const char *name, int64_t v) {
  RcWeight w = {name, {RC_KIND_INT, v, 0.0, 0}};
  return w;
}

static RcWeight bool_weight(const char *name, int v) {
  RcWeight w = {name, {RC_KIND_BOOL, 0, 0.0, (uint8_t)v}};
  return w;
}

static const char *A = "5c910f6bc484d023b1309bee";
static const char *B = "5c910938c484d023b1309bab";

/* The seed: Donate 20 (top 10), Like 2 (sum), Subscriber true. */
static void seed(RcEngine *e) {
  RcPropDef props[] = {
      {"Donate", RC_KIND_INT, 0, 10},
      {"Like", RC_KIND_INT, 1, 0},
      {"Subscriber", RC_KIND_BOOL, 0, 0},
  };
  CHECK_STATUS(rc_define(e, 3, 1, 2, props, 3), RC_STATUS_OK);
  RcWeight donate = int_weight("Donate", 20);
  RcWeight like = int_weight("Like", 2);
  RcWeight subscriber = bool_weight("Subscriber", 1);
  CHECK_STATUS(rc_attach(e, 3, A, B, &donate, 1), RC_STATUS_OK);
  CHECK_STATUS(rc_strengthen(e, 3, A, B, &like, 1), RC_STATUS_OK);
  CHECK_STATUS(rc_edit(e, 3, A, B, &subscriber, 1), RC_STATUS_OK);
}

/* The seed's answer, read through the counter accessors. */
static void check_seed(const RcEngine *e) {
  RcCounter *c = NULL;
  CHECK_STATUS(rc_get_counter(e, 3, A, &c), RC_STATUS_OK);
  if (c == NULL) return;
  RcProfileId id;
  uint64_t xxh = 0;
  CHECK_STATUS(rc_counter_profile(c, &id, &xxh), RC_STATUS_OK);
  CHECK(strcmp(id.id, A) == 0 && id.len == strlen(A));
  CHECK(xxh == 0x54ec2d76ac22a964ULL);
  CHECK(rc_counter_total(c) == 1);

  RcProp p;
  CHECK_STATUS(rc_counter_prop(c, "Donate", &p), RC_STATUS_OK);
  CHECK(p.total == 1 && p.has_sum == 0 && p.has_top == 1 && p.top_len == 1);
  RcTopItem top;
  CHECK_STATUS(rc_counter_top(c, "Donate", 0, &top), RC_STATUS_OK);
  CHECK(strcmp(top.profile_id.id, B) == 0);
  CHECK(top.value.kind == RC_KIND_INT && top.value.int_value == 20);

  CHECK_STATUS(rc_counter_prop(c, "Like", &p), RC_STATUS_OK);
  CHECK(p.total == 1 && p.has_sum == 1 && p.has_top == 0);
  CHECK(p.sum.kind == RC_KIND_INT && p.sum.int_hi == 0 && (int64_t)p.sum.int_lo == 2);

  CHECK_STATUS(rc_counter_prop(c, "Subscriber", &p), RC_STATUS_OK);
  CHECK(p.total == 1 && p.has_sum == 0 && p.has_top == 0);
  rc_counter_free(c);
}

/* Calls that must be refused with their code and a message, changing nothing. */
static void check_refusals(RcEngine *e) {
  RcCounter *c = NULL;
  RcWeight w = int_weight("Donate", 1);

  CHECK_STATUS(rc_get_counter(NULL, 3, A, &c), RC_STATUS_NULL_ARGUMENT);
  CHECK(strstr(rc_last_error(), "engine") != NULL);
  CHECK_STATUS(rc_get_counter(e, 3, A, NULL), RC_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(rc_attach(e, 3, NULL, B, &w, 1), RC_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(rc_attach(e, 3, A, B, NULL, 1), RC_STATUS_NULL_ARGUMENT);

  CHECK_STATUS(rc_get_counter(e, 4, A, &c), RC_STATUS_UNKNOWN_RELATION);
  CHECK(strcmp(rc_last_error(), "relation 4 is not defined") == 0);
  CHECK(c == NULL);
  CHECK_STATUS(rc_get_counter(e, 3, "nobody", &c), RC_STATUS_PROFILE_NOT_FOUND);
  CHECK_STATUS(rc_get_counter(e, 3, "", &c), RC_STATUS_INVALID_PROFILE_ID);

  RcWeight wrong = bool_weight("Donate", 1);
  CHECK_STATUS(rc_attach(e, 3, A, B, &wrong, 1), RC_STATUS_WRONG_TYPE);
  RcWeight unknown = int_weight("Nope", 1);
  CHECK_STATUS(rc_attach(e, 3, A, B, &unknown, 1), RC_STATUS_UNKNOWN_PROPERTY);
  RcWeight twice[] = {int_weight("Like", 1), int_weight("Like", 2)};
  CHECK_STATUS(rc_attach(e, 3, A, B, twice, 2), RC_STATUS_DUPLICATE_PROPERTY);
  RcWeight big = int_weight("Like", INT64_MAX);
  CHECK_STATUS(rc_strengthen(e, 3, A, B, &big, 1), RC_STATUS_INT_OVERFLOW);
  RcWeight bad_kind = {"Donate", {7, 1, 0.0, 0}};
  CHECK_STATUS(rc_attach(e, 3, A, B, &bad_kind, 1), RC_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(rc_last_error(), "kind 7") != NULL);
  const char not_utf8[] = {(char)0xff, (char)0xfe, 0};
  CHECK_STATUS(rc_attach(e, 3, not_utf8, B, &w, 1), RC_STATUS_INVALID_UTF8);
  CHECK_STATUS(rc_detach(e, 3, A, "5c910938c484d023b1309bac"), RC_STATUS_PROFILE_NOT_FOUND);
  CHECK_STATUS(rc_detach(e, 3, B, A), RC_STATUS_PROFILE_NOT_FOUND);
  CHECK_STATUS(rc_delete_profile(e, 1, "nobody"), RC_STATUS_PROFILE_NOT_FOUND);

  RcPropDef other[] = {{"Donate", RC_KIND_FLOAT, 0, 0}};
  CHECK_STATUS(rc_define(e, 3, 1, 2, other, 1), RC_STATUS_SCHEMA_CONFLICT);
  RcPropDef too_big[] = {{"Donate", RC_KIND_INT, 0, 5000}};
  CHECK_STATUS(rc_define(e, 5, 1, 2, too_big, 1), RC_STATUS_INVALID_SCHEMA);

  RcEngine *none = NULL;
  CHECK_STATUS(rc_engine_open("/proc/relcount-no-such-dir", "always", &none), RC_STATUS_STORAGE);
  CHECK(none == NULL);
  CHECK_STATUS(rc_engine_open("/tmp", "sometimes", &none), RC_STATUS_INVALID_ARGUMENT);

  /* The top list's end, and a property keeping none. */
  CHECK_STATUS(rc_get_counter(e, 3, A, &c), RC_STATUS_OK);
  RcTopItem item;
  CHECK_STATUS(rc_counter_top(c, "Donate", 1, &item), RC_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(rc_counter_top(c, "Like", 0, &item), RC_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(rc_counter_prop(c, "Nope", NULL), RC_STATUS_NULL_ARGUMENT);
  rc_counter_free(c);

  /* A success clears the message. */
  CHECK_STATUS(rc_get_counter(e, 3, A, &c), RC_STATUS_OK);
  CHECK(strcmp(rc_last_error(), "") == 0);
  rc_counter_free(c);
  rc_counter_free(NULL);
  rc_engine_free(NULL);
}

/* A batch: applied in order, all or nothing (a refused write names its row). */
static void check_batch(RcEngine *e) {
  RcWeight donate = int_weight("Donate", 5);
  RcWeight like = int_weight("Like", 3);
  const char *C = "5c910938c484d023b1309bad";
  RcWrite ok[] = {
      {RC_OP_ATTACH, 3, A, C, &donate, 1},
      {RC_OP_STRENGTHEN, 3, A, C, &like, 1},
      {RC_OP_STRENGTHEN, 3, A, C, &like, 1},
  };
  CHECK_STATUS(rc_apply(e, ok, 3), RC_STATUS_OK);
  RcWrite refused[] = {
      {RC_OP_DETACH, 3, A, C, NULL, 0},
      {RC_OP_DETACH, 3, A, C, NULL, 0},
  };
  CHECK_STATUS(rc_apply(e, refused, 2), RC_STATUS_RELATION_NOT_FOUND);
  CHECK(strstr(rc_last_error(), "row 1") != NULL);
  RcWrite bad_op[] = {{9, 3, A, C, NULL, 0}};
  CHECK_STATUS(rc_apply(e, bad_op, 1), RC_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(rc_last_error(), "row 0") != NULL);
  CHECK_STATUS(rc_apply(e, NULL, 0), RC_STATUS_OK);
  RcCounter *c = NULL;
  CHECK_STATUS(rc_get_counter(e, 3, A, &c), RC_STATUS_OK);
  if (c == NULL) return;
  CHECK(rc_counter_total(c) == 2); /* B's and C's, the refused detaches undone */
  RcProp p;
  CHECK_STATUS(rc_counter_prop(c, "Like", &p), RC_STATUS_OK);
  CHECK(p.has_sum && p.sum.int_hi == 0 && p.sum.int_lo == 2 + 6);
  rc_counter_free(c);
  RcWrite undo[] = {{RC_OP_DETACH, 3, A, C, NULL, 0}};
  CHECK_STATUS(rc_apply(e, undo, 1), RC_STATUS_OK);
}

/* Detach and delete change the counters; a counter taken before is a snapshot. */
static void check_writes(RcEngine *e) {
  RcCounter *before = NULL, *after = NULL;
  CHECK_STATUS(rc_get_counter(e, 3, A, &before), RC_STATUS_OK);
  CHECK_STATUS(rc_detach(e, 3, A, B), RC_STATUS_OK);
  CHECK_STATUS(rc_get_counter(e, 3, A, &after), RC_STATUS_OK);
  CHECK(rc_counter_total(before) == 1 && rc_counter_total(after) == 0);
  rc_counter_free(after);
  CHECK_STATUS(rc_delete_profile(e, 1, A), RC_STATUS_OK);
  CHECK_STATUS(rc_get_counter(e, 3, A, &after), RC_STATUS_PROFILE_NOT_FOUND);
  CHECK(rc_counter_total(before) == 1);
  rc_counter_free(before);
}

/*
 * Calls during teardown (review regression): a handle freed by an atexit handler or
 * a pthread key destructor, after the thread's own thread-locals are gone, must not
 * abort the process. An abort fails the test (the exit status is checked).
 */
static RcEngine *at_exit_engine = NULL;
static RcCounter *at_exit_counter = NULL;
static pthread_key_t teardown_key;

static void free_at_exit(void) {
  rc_counter_free(at_exit_counter);
  rc_engine_free(at_exit_engine);
  (void)rc_last_error();
  RcEngine *late = NULL;
  if (rc_engine_new(&late) == RC_STATUS_OK) rc_engine_free(late);
}

static void free_in_key_destructor(void *counter) {
  rc_counter_free((RcCounter *)counter);
  (void)rc_last_error();
}

static void *teardown_worker(void *engine) {
  RcCounter *c = NULL;
  if (rc_get_counter((RcEngine *)engine, 3, A, &c) == RC_STATUS_OK) pthread_setspecific(teardown_key, c);
  return NULL;
}

static void check_teardown(void) {
  CHECK_STATUS(rc_engine_new(&at_exit_engine), RC_STATUS_OK);
  seed(at_exit_engine);
  CHECK_STATUS(rc_get_counter(at_exit_engine, 3, A, &at_exit_counter), RC_STATUS_OK);
  CHECK(atexit(free_at_exit) == 0);
  CHECK(pthread_key_create(&teardown_key, free_in_key_destructor) == 0);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, teardown_worker, at_exit_engine) == 0);
  CHECK(pthread_join(t, NULL) == 0);
}

int main(int argc, char **argv) {
  RcEngine *e = NULL;
  CHECK_STATUS(rc_engine_new(&e), RC_STATUS_OK);
  seed(e);
  check_seed(e);
  check_refusals(e);
  check_seed(e); /* the refused calls changed nothing */
  check_batch(e);
  check_seed(e);
  check_writes(e);
  rc_engine_free(e);
  check_teardown();

  /* Durable: the seed survives a reopen of its data directory. */
  if (argc > 1) {
    const char *dir = argv[1];
    RcEngine *d = NULL;
    CHECK_STATUS(rc_engine_open(dir, "always", &d), RC_STATUS_OK);
    seed(d);
    RcEngine *again = NULL;
    CHECK_STATUS(rc_engine_open(dir, NULL, &again), RC_STATUS_STORAGE); /* locked */
    rc_engine_free(d);
    CHECK_STATUS(rc_engine_open(dir, NULL, &again), RC_STATUS_OK);
    check_seed(again);
    rc_engine_free(again);
  }
  if (failures) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("seed.c: every check passed\n");
  return 0;
}
