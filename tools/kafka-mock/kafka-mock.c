/*
 * kafka-mock: a local Kafka-protocol cluster for tests, built on librdkafka's
 * mock cluster (librdkafka/rdkafka_mock.h, Debian librdkafka-dev 2.0.2).
 *
 * Usage: kafka-mock [--brokers N]          (default 1; broker ids are 1..N)
 *
 * Prints one line "BOOTSTRAP host:port[,host:port...]" on stdout, then reads
 * one command per line on stdin and answers each with exactly one line,
 * "OK" or "ERR <message>":
 *   create-topic NAME PARTITIONS [REPLICATION]
 *   broker-down ID | broker-up ID
 *   push-errors APIKEY COUNT ERRCODE [ERRCODE...]
 *   rtt ID MS
 *   partition-leader TOPIC PARTITION ID    (ID -1: leader-less, as while a
 *                                           broker restarts)
 *   auto-create on|off                     (whether a metadata request creates
 *                                           an unknown topic; on at start. Only
 *                                           the librdkafka 2.12.0 build with
 *                                           librdkafka-2.12.0-mock-fixes.patch)
 *   ping
 *   quit                                   (EOF on stdin also quits)
 *
 * Build: gcc -O2 -Wall -o kafka-mock kafka-mock.c -lrdkafka
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_ARGS 64

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
        (void)sig;
        stop_requested = 1;
}

/* Parses a base-10 integer in [min, max]; returns 0 on success. */
static int parse_int(const char *s, long min, long max, long *out) {
        char *end;
        long v;
        errno = 0;
        v     = strtol(s, &end, 10);
        if (errno || end == s || *end || v < min || v > max)
                return -1;
        *out = v;
        return 0;
}

static void reply_err(const char *fmt, const char *arg) {
        printf("ERR ");
        printf(fmt, arg);
        printf("\n");
        fflush(stdout);
}

static void reply_rkerr(rd_kafka_resp_err_t err) {
        if (err)
                reply_err("%s", rd_kafka_err2str(err));
        else {
                printf("OK\n");
                fflush(stdout);
        }
}

/* Handles one command line; returns 1 when the program should quit. */
static int handle(rd_kafka_mock_cluster_t *mc, int nbrokers, char *line) {
        char *argv[MAX_ARGS], *save = NULL, *tok;
        int argc = 0;
        long a, b, c;

        for (tok = strtok_r(line, " \t\r\n", &save); tok && argc < MAX_ARGS;
             tok = strtok_r(NULL, " \t\r\n", &save))
                argv[argc++] = tok;
        if (argc == 0) {
                reply_err("%s", "empty command");
                return 0;
        }

        if (!strcmp(argv[0], "ping") && argc == 1) {
                reply_rkerr(RD_KAFKA_RESP_ERR_NO_ERROR);
        } else if (!strcmp(argv[0], "quit") && argc == 1) {
                reply_rkerr(RD_KAFKA_RESP_ERR_NO_ERROR);
                return 1;
        } else if (!strcmp(argv[0], "create-topic") &&
                   (argc == 3 || argc == 4)) {
                if (parse_int(argv[2], 1, 100000, &a) ||
                    (argc == 4 && parse_int(argv[3], 1, nbrokers, &b)))
                        reply_err("%s", "usage: create-topic NAME PARTITIONS "
                                        "[REPLICATION<=brokers]");
                else
                        reply_rkerr(rd_kafka_mock_topic_create(
                            mc, argv[1], (int)a, argc == 4 ? (int)b : 1));
        } else if ((!strcmp(argv[0], "broker-down") ||
                    !strcmp(argv[0], "broker-up")) &&
                   argc == 2) {
                if (parse_int(argv[1], 1, nbrokers, &a))
                        reply_err("no such broker id: %s", argv[1]);
                else if (!strcmp(argv[0], "broker-down"))
                        reply_rkerr(rd_kafka_mock_broker_set_down(mc, (int32_t)a));
                else
                        reply_rkerr(rd_kafka_mock_broker_set_up(mc, (int32_t)a));
        } else if (!strcmp(argv[0], "rtt") && argc == 3) {
                if (parse_int(argv[1], 1, nbrokers, &a))
                        reply_err("no such broker id: %s", argv[1]);
                else if (parse_int(argv[2], 0, INT_MAX, &b))
                        reply_err("invalid rtt: %s", argv[2]);
                else
                        reply_rkerr(
                            rd_kafka_mock_broker_set_rtt(mc, (int32_t)a, (int)b));
        } else if (!strcmp(argv[0], "partition-leader") && argc == 4) {
                if (parse_int(argv[2], 0, 100000, &a) ||
                    parse_int(argv[3], -1, nbrokers, &b) || b == 0)
                        reply_err("%s", "usage: partition-leader TOPIC PARTITION "
                                        "ID (1..brokers, or -1 for none)");
                else
                        reply_rkerr(rd_kafka_mock_partition_set_leader(
                            mc, argv[1], (int32_t)a, (int32_t)b));
        } else if (!strcmp(argv[0], "auto-create") && argc == 2 &&
                   (!strcmp(argv[1], "on") || !strcmp(argv[1], "off"))) {
#ifdef RD_KAFKA_MOCK_HAS_SET_AUTO_CREATE_TOPICS
                rd_kafka_mock_set_auto_create_topics(mc,
                                                     !strcmp(argv[1], "on"));
                reply_rkerr(RD_KAFKA_RESP_ERR_NO_ERROR);
#else
                reply_err("%s", "auto-create: not in this librdkafka build "
                                "(build kafka-mock-next)");
#endif
        } else if (!strcmp(argv[0], "push-errors") && argc >= 4) {
                rd_kafka_resp_err_t errs[MAX_ARGS];
                int ncodes = argc - 3, i;
                if (parse_int(argv[1], 0, INT16_MAX, &a) ||
                    parse_int(argv[2], 1, MAX_ARGS, &b) ||
                    (ncodes != 1 && ncodes != b)) {
                        reply_err("%s", "usage: push-errors APIKEY COUNT ERRCODE "
                                        "[ERRCODE...] (1 code or COUNT codes, "
                                        "COUNT<=64)");
                        return 0;
                }
                for (i = 0; i < b; i++) {
                        const char *s = argv[3 + (ncodes == 1 ? 0 : i)];
                        if (parse_int(s, INT_MIN, INT_MAX, &c)) {
                                reply_err("invalid error code: %s", s);
                                return 0;
                        }
                        errs[i] = (rd_kafka_resp_err_t)c;
                }
                rd_kafka_mock_push_request_errors_array(mc, (int16_t)a,
                                                        (size_t)b, errs);
                reply_rkerr(RD_KAFKA_RESP_ERR_NO_ERROR);
        } else {
                reply_err("unknown command or wrong arguments: %s", argv[0]);
        }
        return 0;
}

int main(int argc, char **argv) {
        long nbrokers = 1;
        char errstr[512], *line = NULL;
        size_t cap = 0;
        rd_kafka_conf_t *conf;
        rd_kafka_t *rk;
        rd_kafka_mock_cluster_t *mc;
        struct sigaction sa;
        int i;

        /* Die with the parent (test runner), even if it is SIGKILLed. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
                return 1; /* parent already gone */

        for (i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--brokers") && i + 1 < argc &&
                    !parse_int(argv[i + 1], 1, 64, &nbrokers))
                        i++;
                else {
                        fprintf(stderr, "usage: %s [--brokers N (1..64)]\n",
                                argv[0]);
                        return 2;
                }
        }

        /* No SA_RESTART: a signal interrupts the blocking read on stdin. */
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);

        conf = rd_kafka_conf_new();
        /* No bootstrap.servers: this handle only hosts the mock cluster. */
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk) {
                fprintf(stderr, "rd_kafka_new failed: %s\n", errstr);
                return 1;
        }
        mc = rd_kafka_mock_cluster_new(rk, (int)nbrokers);
        if (!mc) {
                fprintf(stderr, "rd_kafka_mock_cluster_new failed\n");
                rd_kafka_destroy(rk);
                return 1;
        }

        printf("BOOTSTRAP %s\n", rd_kafka_mock_cluster_bootstraps(mc));
        fflush(stdout);

        while (!stop_requested && getline(&line, &cap, stdin) != -1) {
                if (handle(mc, (int)nbrokers, line))
                        break;
        }

        free(line);
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        return 0;
}
