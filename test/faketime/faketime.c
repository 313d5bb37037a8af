/*
 * faketime: an LD_PRELOAD shim that shifts a process's wall clock, for
 * fault tests of clock skew (redis-server under test).
 *
 * The offset, in milliseconds, is a little-endian int64 at the start of the
 * file named by FAKETIME_FILE; the file is mapped once and read at every
 * call, so a test changes the skew of a running process by rewriting it.
 * Only CLOCK_REALTIME (and its coarse variant), gettimeofday and time are
 * shifted: monotonic clocks, which time intervals, are not.
 *
 * Debian's libfaketime crashes redis-server (jemalloc) at start with a
 * recursive clock_gettime; this shim allocates nothing and calls the kernel
 * directly.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile int64_t *offset_ms;
static int tried;

static int64_t offset_ns(void) {
	if (!__atomic_load_n(&tried, __ATOMIC_ACQUIRE)) {
		const char *path = getenv("FAKETIME_FILE");
		if (path) {
			int fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				void *p = mmap(NULL, 8, PROT_READ, MAP_SHARED, fd, 0);
				close(fd);
				if (p != MAP_FAILED)
					offset_ms = p;
			}
		}
		__atomic_store_n(&tried, 1, __ATOMIC_RELEASE);
	}
	if (!offset_ms)
		return 0;
	return __atomic_load_n(offset_ms, __ATOMIC_RELAXED) * 1000000LL;
}

static void shift(struct timespec *ts) {
	int64_t ns = (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec + offset_ns();
	ts->tv_sec = ns / 1000000000LL;
	ts->tv_nsec = ns % 1000000000LL;
	if (ts->tv_nsec < 0) {
		ts->tv_nsec += 1000000000LL;
		ts->tv_sec--;
	}
}

int clock_gettime(clockid_t id, struct timespec *ts) {
	int r = syscall(SYS_clock_gettime, id, ts);
	if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
		shift(ts);
	return r;
}

int gettimeofday(struct timeval *tv, void *tz) {
	struct timespec ts;
	(void)tz;
	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return -1;
	if (tv) {
		tv->tv_sec = ts.tv_sec;
		tv->tv_usec = ts.tv_nsec / 1000;
	}
	return 0;
}

time_t time(time_t *t) {
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (t)
		*t = ts.tv_sec;
	return ts.tv_sec;
}
