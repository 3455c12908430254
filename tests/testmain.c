/* testmain.c -- the one main() of every Check suite (see tu_suite in
 * testutil.h). */
#include "testutil.h"

#include <check.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>

int main(void)
{
    Suite *s;
    SRunner *sr;
    int failed;

    /* Process-wide, once, before any test forks: libcurl's global state
     * (the gateway and the simulator tests talk HTTP) and SIGPIPE, which a
     * server closing a connection must not turn into a test's death. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "testmain: curl_global_init failed\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    s = tu_suite();
    if (!s) {
        curl_global_cleanup();
        return 77;
    }
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
