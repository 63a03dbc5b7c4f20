/* WatchProviders subscribers in C, for bench/propagation.py --c-subscribers.

   One process, one thread, epoll: C HTTP/2 connections (h2c, prior knowledge; Debian's
   libnghttp2), each carrying its share of S gRPC streams. Every stream sends its
   request (the gRPC-framed WatchProvidersRequest, built by Python) with the bridge token
   in `authorization: Bearer ...`, then reads DATA frames, reassembles the gRPC messages
   and reads each snapshot's version from the wire (field 1 of the response, field 1 of
   the snapshot; the snapshot must span the message), recording (stream, version,
   CLOCK_MONOTONIC ns) in memory. nghttp2 sends the WINDOW_UPDATEs (large windows set).

   argv: host port connections
   stdin: u32 token length, token, u32 stream count, then per stream u32 length + the
          framed request (all big-endian). After that stdin stays open; its end (or a
          line) means stop.
   stdout: "ready <opened> <refused> <pending>" once every stream has its first message
           or has ended (or after 240 s); then, at stop, one line per arrival
           "A <stream> <version> <t_ns>", per stream that ended
           "E <stream> <before_first 0|1> <grpc-status|-1> <HTTP/2 error code|-1: connection lost>" and last
           "S <messages> <bad_messages> <bytes> <connections_lost>".
   The token is read from stdin and never printed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PATH "/aibridge.config.v1.ConfigService/WatchProviders"
#define READY_TIMEOUT_NS (240LL * 1000000000LL)

typedef struct {
    int index;          /* the stream's number, 0..S-1 */
    const uint8_t *req; /* the framed request */
    size_t req_len, req_sent;
    uint8_t head[5]; /* the gRPC message prefix being read */
    size_t head_got;
    uint8_t *msg; /* the message being read */
    size_t msg_len, msg_got;
    int conn; /* its connection's number */
    int first_seen, closed, grpc_status;
    int64_t h2_error; /* RST_STREAM / GOAWAY code when it ended; -1: its connection was lost */
} stream_t;

typedef struct {
    int fd;
    nghttp2_session *session;
    int want_out; /* EPOLLOUT registered */
    int dead;
} conn_t;

typedef struct {
    int32_t stream;
    int64_t version;
    int64_t t_ns;
} arrival_t;

static arrival_t *arrivals;
static size_t n_arrivals, cap_arrivals;
static long long messages, bad_messages, bytes_in, connections_lost;
static int opened, refused, n_streams;
static stream_t *streams;
static int epfd;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "_subscribers: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int read_all(int fd, void *buf, size_t len) {
    uint8_t *p = buf;
    while (len) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static int varint(const uint8_t *d, size_t end, size_t *at, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*at >= end) return -1;
        uint8_t b = d[(*at)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (b < 0x80) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* (start, end) of length-delimited field `number` in d[start:end]; -1 if absent. */
static int field(const uint8_t *d, size_t start, size_t end, uint64_t number, size_t *fs,
                 size_t *fe) {
    size_t at = start;
    while (at < end) {
        uint64_t key, v;
        if (varint(d, end, &at, &key)) return -1;
        switch (key & 7) {
        case 2:
            if (varint(d, end, &at, &v) || v > end - at) return -1;
            if ((key >> 3) == number) {
                *fs = at;
                *fe = at + v;
                return 0;
            }
            at += v;
            break;
        case 0:
            if (varint(d, end, &at, &v)) return -1;
            break;
        case 1:
            at += 8;
            break;
        case 5:
            at += 4;
            break;
        default:
            return -1;
        }
    }
    return -1;
}

/* A WatchProvidersResponse's snapshot.version, as bench/propagation.py's
   snapshot_version reads it; -1 if the message is not one. */
static int64_t snapshot_version(const uint8_t *m, size_t len) {
    size_t s, e, vs, ve;
    if (field(m, 0, len, 1, &s, &e) || e != len) return -1;
    if (field(m, s, e, 1, &vs, &ve) || ve == vs || ve - vs > 18) return -1;
    int64_t v = 0;
    for (size_t i = vs; i < ve; i++) {
        if (m[i] < '0' || m[i] > '9') return -1;
        v = v * 10 + (m[i] - '0');
    }
    return v;
}

static void record(stream_t *st, int64_t version) {
    if (n_arrivals == cap_arrivals) {
        cap_arrivals = cap_arrivals ? cap_arrivals * 2 : 65536;
        arrivals = realloc(arrivals, cap_arrivals * sizeof *arrivals);
        if (!arrivals) die("realloc");
    }
    arrivals[n_arrivals++] = (arrival_t){st->index, version, now_ns()};
    if (!st->first_seen) {
        st->first_seen = 1;
        opened++;
    }
}

static void message_done(stream_t *st) {
    messages++;
    int64_t v = st->head[0] ? -1 : snapshot_version(st->msg, st->msg_len); /* compressed: no */
    if (v < 0)
        bad_messages++;
    else
        record(st, v);
    st->head_got = 0;
    st->msg_got = 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                   size_t len, void *user) {
    (void)flags;
    (void)user;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st) return 0;
    bytes_in += (long long)len;
    while (len) {
        if (st->head_got < 5) {
            size_t take = 5 - st->head_got < len ? 5 - st->head_got : len;
            memcpy(st->head + st->head_got, data, take);
            st->head_got += take;
            data += take;
            len -= take;
            if (st->head_got < 5) break;
            st->msg_len = be32(st->head + 1);
            if (st->msg_len > 64u * 1024 * 1024) return NGHTTP2_ERR_CALLBACK_FAILURE;
            st->msg = realloc(st->msg, st->msg_len ? st->msg_len : 1);
            if (!st->msg) die("realloc");
            st->msg_got = 0;
            if (st->msg_len == 0) {
                message_done(st);
                continue;
            }
        }
        size_t take = st->msg_len - st->msg_got < len ? st->msg_len - st->msg_got : len;
        memcpy(st->msg + st->msg_got, data, take);
        st->msg_got += take;
        data += take;
        len -= take;
        if (st->msg_got == st->msg_len) message_done(st);
    }
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
    (void)flags;
    (void)user;
    stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (st && namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        char buf[16] = {0};
        memcpy(buf, value, valuelen < 15 ? valuelen : 15);
        st->grpc_status = atoi(buf);
    }
    return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *user) {
    (void)user;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st || st->closed) return 0;
    st->closed = 1;
    st->h2_error = error_code;
    if (!st->first_seen) refused++;
    free(st->msg);
    st->msg = NULL;
    return 0;
}

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags,
                       void *user) {
    (void)s;
    (void)flags;
    conn_t *c = user;
    ssize_t w = send(c->fd, data, len, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return NGHTTP2_ERR_WOULDBLOCK;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return w;
}

static ssize_t read_request(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *user) {
    (void)s;
    (void)id;
    (void)user;
    stream_t *st = src->ptr;
    size_t left = st->req_len - st->req_sent;
    size_t take = left < len ? left : len;
    memcpy(buf, st->req + st->req_sent, take);
    st->req_sent += take;
    if (st->req_sent == st->req_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)take;
}

static conn_t *conns;

/* The server closed the connection (or it failed): every stream still open on it ends. */
static void lose(conn_t *c) {
    if (c->dead) return;
    c->dead = 1;
    connections_lost++;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    for (int i = 0; i < n_streams; i++) {
        stream_t *st = &streams[i];
        if (&conns[st->conn] != c || st->closed) continue;
        st->closed = 1;
        st->h2_error = -1;
        if (!st->first_seen) refused++;
    }
}

static void flush(conn_t *c) {
    if (c->dead) return;
    if (nghttp2_session_send(c->session) != 0) {
        lose(c);
        return;
    }
    int want = nghttp2_session_want_write(c->session);
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
    }
}

static void on_readable(conn_t *c) {
    static uint8_t buf[256 * 1024];
    for (;;) {
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r > 0) {
            if (nghttp2_session_mem_recv(c->session, buf, (size_t)r) < 0) {
                lose(c);
                return;
            }
            if ((size_t)r < sizeof buf) break;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r < 0 && errno == EINTR) continue;
        lose(c); /* the server closed the connection or it failed */
        return;
    }
    flush(c);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s host port connections < requests\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2];
    int nconn = atoi(argv[3]);
    uint8_t b4[4];
    if (read_all(0, b4, 4)) die("stdin: token length");
    uint32_t token_len = be32(b4);
    char *auth = malloc(token_len + 8);
    memcpy(auth, "Bearer ", 7);
    if (read_all(0, auth + 7, token_len)) die("stdin: token");
    size_t auth_len = token_len + 7;
    if (read_all(0, b4, 4)) die("stdin: count");
    n_streams = (int)be32(b4);
    streams = calloc((size_t)n_streams, sizeof *streams);
    for (int i = 0; i < n_streams; i++) {
        if (read_all(0, b4, 4)) die("stdin: request length");
        uint32_t len = be32(b4);
        uint8_t *req = malloc(len);
        if (read_all(0, req, len)) die("stdin: request");
        streams[i] = (stream_t){.index = i, .req = req, .req_len = len, .grpc_status = -1};
    }
    if (nconn < 1) nconn = 1;
    if (nconn > n_streams && n_streams > 0) nconn = n_streams;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, port, &hints, &ai)) die("getaddrinfo");
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev); /* stdin: the stop signal */

    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_peer_max_concurrent_streams(opt, 1u << 30);

    char authority[300];
    snprintf(authority, sizeof authority, "%s:%s", host, port);
    conns = calloc((size_t)nconn, sizeof *conns);
    for (int k = 0; k < nconn; k++) {
        conn_t *c = &conns[k];
        c->fd = socket(ai->ai_family, SOCK_STREAM, 0);
        if (c->fd < 0) die("socket");
        if (connect(c->fd, ai->ai_addr, ai->ai_addrlen)) die("connect");
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        nghttp2_session_client_new2(&c->session, cbs, c, opt);
        nghttp2_settings_entry iv[] = {
            {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
            {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24},
        };
        nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 2);
        nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 1 << 30);
        struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &cev);
    }
    freeaddrinfo(ai);
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    for (int i = 0; i < n_streams; i++) {
        streams[i].conn = i % nconn;
        conn_t *c = &conns[i % nconn];
        nghttp2_nv hdrs[] = {
            NV(":method", "POST"),
            NV(":scheme", "http"),
            NV(":path", PATH),
            NV(":authority", authority),
            NV("content-type", "application/grpc"),
            NV("te", "trailers"),
            NV("user-agent", "aibridge-bench-c-subscribers"),
            {(uint8_t *)"authorization", (uint8_t *)auth, 13, auth_len,
             NGHTTP2_NV_FLAG_NO_INDEX},
        };
        nghttp2_data_provider dp = {.source.ptr = &streams[i], .read_callback = read_request};
        int32_t id = nghttp2_submit_request(c->session, NULL, hdrs, sizeof hdrs / sizeof *hdrs,
                                            &dp, &streams[i]);
        if (id < 0) {
            streams[i].closed = 1;
            refused++;
        }
    }
    for (int k = 0; k < nconn; k++) flush(&conns[k]);

    int ready_said = 0, stop = 0;
    int64_t started = now_ns();
    struct epoll_event events[256];
    while (!stop) {
        if (!ready_said) {
            if (opened + refused >= n_streams || now_ns() - started > READY_TIMEOUT_NS) {
                printf("ready %d %d %d\n", opened, refused, n_streams - opened - refused);
                fflush(stdout);
                ready_said = 1;
            }
        }
        int n = epoll_wait(epfd, events, 256, ready_said ? -1 : 100);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("epoll_wait");
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            if (c == NULL) { /* stdin: stop */
                stop = 1;
                continue;
            }
            if (events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
            if (!c->dead && (events[e].events & EPOLLOUT)) flush(c);
        }
    }
    FILE *out = stdout;
    for (size_t i = 0; i < n_arrivals; i++)
        fprintf(out, "A %d %lld %lld\n", arrivals[i].stream, (long long)arrivals[i].version,
                (long long)arrivals[i].t_ns);
    for (int i = 0; i < n_streams; i++)
        if (streams[i].closed)
            fprintf(out, "E %d %d %d %lld\n", i, !streams[i].first_seen, streams[i].grpc_status,
                    (long long)streams[i].h2_error);
    fprintf(out, "S %lld %lld %lld %lld\n", messages, bad_messages, bytes_in, connections_lost);
    fflush(out);
    return 0;
}
