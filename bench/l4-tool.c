/* SPDX-License-Identifier: Apache-2.0 */
/* Load generator and backend of the L4 benchmark (bench/l4.ts compiles it with clang). C, so the
 * figures measure the kernel path (connect, translation, NAT, forwarding), not a runtime's event
 * loop. Every client mode prints one JSON line.
 *
 *   server ADDR PORT                 backend: one byte in, one byte out; closes when the client does
 *   crr N PORT IP...                 N sequential connects (round robin over IPs): connect + 1 byte
 *                                    out + first byte back, in microseconds; the client closes first
 *   rr SECONDS CONNS PORT IP...      CONNS established connections, one request at a time, round
 *                                    robin: round-trip times and requests per second
 *   cps SECONDS PAR PORT IP...       PAR processes doing crr in a loop: connections per second
 *   first TIMEOUT_MS PORT IP         connect (non-blocking, 2 ms each) until one succeeds: wall-clock
 *                                    microseconds (CLOCK_REALTIME) of the first success
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct sockaddr_in addr_of(const char *ip, int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", ip);
		exit(2);
	}
	return sa;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, size_t n, double p)
{
	size_t i;

	if (!n)
		return 0;
	i = (size_t)(p * (double)(n - 1) + 0.5);
	return (double)v[i] / 1000.0;
}

/* One connect + request + first byte; returns ns, or 0 on failure (errno kept in *err). */
static uint64_t crr_once(const struct sockaddr_in *sa, int *err)
{
	char b = 'c';
	char buf[64];
	uint64_t t0 = now_ns(CLOCK_MONOTONIC), t1;
	int s = socket(AF_INET, SOCK_STREAM, 0);

	if (s < 0) {
		*err = errno;
		return 0;
	}
	if (connect(s, (const struct sockaddr *)sa, sizeof(*sa)) < 0 || send(s, &b, 1, 0) != 1 ||
	    recv(s, &b, 1, 0) != 1) {
		*err = errno ? errno : EPIPE;
		close(s);
		return 0;
	}
	t1 = now_ns(CLOCK_MONOTONIC);
	/* The client closes first, so TIME_WAIT stays with the client (tcp_tw_reuse recycles it).
	 * Backends closing first would leave TIME_WAIT there, and a later SYN through DNAT carries
	 * timestamps from another (address pair) offset: PAWS drops it and the connect stalls 1 s,
	 * which would measure this harness, not the datapath. */
	close(s);
	(void)buf;
	return t1 - t0 ? t1 - t0 : 1;
}

static int run_server(const char *ip, int port)
{
	struct sockaddr_in sa = addr_of(ip, port);
	int one = 1, ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN}, evs[256];

	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 4096) < 0) {
		perror("bind/listen");
		return 1;
	}
	ev.data.fd = ls;
	epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
	printf("READY\n");
	fflush(stdout);
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);

		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == ls) {
				int c;

				while ((c = accept4(ls, 0, 0, SOCK_NONBLOCK)) >= 0) {
					setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					ev.data.fd = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
				}
				continue;
			}
			char buf[256];
			ssize_t r = recv(fd, buf, sizeof(buf), 0);

			if (r <= 0) {
				if (r < 0 && errno == EAGAIN)
					continue;
				close(fd);
				continue;
			}
			int closing = 0;

			for (ssize_t k = 0; k < r; k++)
				if (send(fd, &buf[k], 1, MSG_NOSIGNAL) != 1)
					closing = 1;
			if (closing)
				close(fd);
		}
	}
}

static int run_crr(long n, int port, char **ips, int nips)
{
	uint64_t *v = calloc((size_t)n, sizeof(uint64_t));
	size_t ok = 0;
	long errors = 0;
	int last_err = 0;
	double sum = 0;
	uint64_t t0 = now_ns(CLOCK_MONOTONIC);

	for (long i = 0; i < n; i++) {
		struct sockaddr_in sa = addr_of(ips[i % nips], port);
		int err = 0;
		uint64_t ns = crr_once(&sa, &err);

		if (ns) {
			v[ok++] = ns;
			sum += (double)ns;
		} else {
			errors++;
			last_err = err;
		}
	}
	double secs = (double)(now_ns(CLOCK_MONOTONIC) - t0) / 1e9;

	qsort(v, ok, sizeof(uint64_t), cmp_u64);
	printf("{\"n\":%zu,\"errors\":%ld,\"lastError\":\"%s\",\"p50us\":%.2f,\"p90us\":%.2f,\"p99us\":%.2f,\"meanus\":%.2f,\"seconds\":%.3f}\n",
	       ok, errors, last_err ? strerror(last_err) : "", pct(v, ok, 0.5), pct(v, ok, 0.9), pct(v, ok, 0.99),
	       ok ? sum / (double)ok / 1000.0 : 0, secs);
	return 0;
}

static int run_rr(double seconds, int conns, int port, char **ips, int nips)
{
	int *fd = calloc((size_t)conns, sizeof(int));
	size_t cap = 1 << 22, n = 0;
	uint64_t *v = malloc(cap * sizeof(uint64_t));
	int one = 1;

	for (int i = 0; i < conns; i++) {
		struct sockaddr_in sa = addr_of(ips[i % nips], port);

		fd[i] = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(fd[i], (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			printf("{\"error\":\"connect %s: %s\"}\n", ips[i % nips], strerror(errno));
			return 1;
		}
	}
	uint64_t start = now_ns(CLOCK_MONOTONIC), end = start + (uint64_t)(seconds * 1e9), t;
	long errors = 0;

	for (int i = 0; (t = now_ns(CLOCK_MONOTONIC)) < end; i = (i + 1) % conns) {
		char b = 'k';

		if (send(fd[i], &b, 1, 0) != 1 || recv(fd[i], &b, 1, 0) != 1) {
			errors++;
			break;
		}
		if (n < cap)
			v[n++] = now_ns(CLOCK_MONOTONIC) - t;
	}
	double secs = (double)(now_ns(CLOCK_MONOTONIC) - start) / 1e9;

	qsort(v, n, sizeof(uint64_t), cmp_u64);
	printf("{\"n\":%zu,\"errors\":%ld,\"rps\":%.1f,\"p50us\":%.2f,\"p99us\":%.2f,\"seconds\":%.3f}\n", n, errors,
	       (double)n / secs, pct(v, n, 0.5), pct(v, n, 0.99), secs);
	for (int i = 0; i < conns; i++)
		close(fd[i]);
	return 0;
}

static int run_cps(double seconds, int par, int port, char **ips, int nips)
{
	int pipes[64][2];
	long total = 0, errors = 0;
	uint64_t start = now_ns(CLOCK_MONOTONIC);

	if (par > 64)
		par = 64;
	for (int p = 0; p < par; p++) {
		if (pipe(pipes[p]) < 0)
			return 1;
		if (fork() == 0) {
			uint64_t end = now_ns(CLOCK_MONOTONIC) + (uint64_t)(seconds * 1e9);
			long cnt[2] = {0, 0};

			for (long i = p; now_ns(CLOCK_MONOTONIC) < end; i++) {
				struct sockaddr_in sa = addr_of(ips[i % nips], port);
				int err = 0;

				if (crr_once(&sa, &err))
					cnt[0]++;
				else
					cnt[1]++;
			}
			if (write(pipes[p][1], cnt, sizeof(cnt)) != sizeof(cnt))
				_exit(1);
			_exit(0);
		}
		close(pipes[p][1]);
	}
	for (int p = 0; p < par; p++) {
		long cnt[2] = {0, 0};

		if (read(pipes[p][0], cnt, sizeof(cnt)) == sizeof(cnt)) {
			total += cnt[0];
			errors += cnt[1];
		}
		close(pipes[p][0]);
	}
	while (wait(0) > 0)
		;
	double secs = (double)(now_ns(CLOCK_MONOTONIC) - start) / 1e9;

	printf("{\"connections\":%ld,\"errors\":%ld,\"cps\":%.1f,\"seconds\":%.3f}\n", total, errors, (double)total / secs, secs);
	return 0;
}

static int run_first(long timeout_ms, int port, const char *ip)
{
	struct sockaddr_in sa = addr_of(ip, port);
	uint64_t end = now_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000000ull;
	long attempts = 0;

	printf("STARTED\n");
	fflush(stdout);
	while (now_ns(CLOCK_MONOTONIC) < end) {
		/* Non-blocking with a 2 ms limit: a connect() made before the service existed keeps its
		 * untranslated destination and would sit in SYN retransmits for seconds; a fresh attempt
		 * goes through connect4 again. The pod-to-pod round trip here is ~0.1 ms. */
		int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		int ok = 0;

		attempts++;
		if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			ok = 1;
		} else if (errno == EINPROGRESS) {
			struct pollfd p = {.fd = s, .events = POLLOUT};
			int soerr = 0;
			socklen_t len = sizeof(soerr);

			if (poll(&p, 1, 2) == 1 && getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0)
				ok = 1;
		}
		if (ok) {
			uint64_t at = now_ns(CLOCK_REALTIME);

			close(s);
			printf("{\"atUs\":%llu,\"attempts\":%ld}\n", (unsigned long long)(at / 1000), attempts);
			return 0;
		}
		close(s);
		usleep(200);
	}
	printf("{\"atUs\":null,\"attempts\":%ld}\n", attempts);
	return 1;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 4 && !strcmp(argv[1], "server"))
		return run_server(argv[2], atoi(argv[3]));
	if (argc >= 5 && !strcmp(argv[1], "crr"))
		return run_crr(atol(argv[2]), atoi(argv[3]), argv + 4, argc - 4);
	if (argc >= 6 && !strcmp(argv[1], "rr"))
		return run_rr(atof(argv[2]), atoi(argv[3]), atoi(argv[4]), argv + 5, argc - 5);
	if (argc >= 6 && !strcmp(argv[1], "cps"))
		return run_cps(atof(argv[2]), atoi(argv[3]), atoi(argv[4]), argv + 5, argc - 5);
	if (argc >= 5 && !strcmp(argv[1], "first"))
		return run_first(atol(argv[2]), atoi(argv[3]), argv[4]);
	fprintf(stderr, "usage: see the comment at the top of bench/l4-tool.c\n");
	return 2;
}
