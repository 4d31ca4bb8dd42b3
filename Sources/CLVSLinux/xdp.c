// The AF_XDP backend: lvsd's XDP program (bpf/lvsd_xdp.bpf.c) that sends
// lvsd's frames to an AF_XDP socket and passes every other frame to the
// kernel, the sockets, and the UMEM they share; and lvs-realserver's tunnel
// decapsulator (bpf/lvs_decap.bpf.c) for tc ingress or XDP. The programs
// are C built with clang -target bpf (scripts/bpf-objects), embedded as
// bytes, and loaded with libbpf; libxdp opens the sockets.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>
#include "CLVSLinux.h"
#include "bpf_objects.h"

// MARK: loading

static int sum_per_cpu(int map, unsigned long long *totals, unsigned count);
static int test_run(int program, const unsigned char *frame, unsigned length, unsigned char *out, unsigned *out_length, unsigned *verdict);

// Newer than this machine's headers (Linux 6.1): tcx (6.6).
enum { LVS_TCX_INGRESS = 46 };

struct lvs_xdp_program {
    int ifindex;
    struct bpf_object *object;
    int program;
    /// The XSKMAP of lvsd's program (the object's), -1 for the decapsulator.
    int sockets;
    /// The per-CPU counters (the object's).
    int counters;
    /// The configuration array (the steering program's), -1 for the others.
    int settings;
    /// A BPF link: the program stays attached while this descriptor is
    /// open, so a process that dies, even by SIGKILL, leaves none behind.
    int link;
};

int lvs_xdp_address_map(unsigned capacity) {
    LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_NO_PREALLOC);
    int fd = bpf_map_create(BPF_MAP_TYPE_HASH, "lvs_addresses", 16, sizeof(unsigned), capacity, &opts);
    return fd < 0 ? -errno : fd;
}

int lvs_xdp_address_set(int map, const unsigned char *address16, unsigned flags) {
    int rc = flags ? bpf_map_update_elem(map, address16, &flags, BPF_ANY) : bpf_map_delete_elem(map, address16);
    if (rc < 0 && !(flags == 0 && errno == ENOENT)) return -errno;
    return 0;
}

static void drop_program(lvs_xdp_program *x) {
    if (x->link >= 0) close(x->link);
    if (x->object) bpf_object__close(x->object);
    free(x);
}

/// Opens an embedded object, gives `shared_map` (when >= 0) to the map
/// named `shared_name`, sizes `sized_name` to `entries`, and loads it; the
/// fd of program `program_name`. NULL with the reason in `error`.
static lvs_xdp_program *open_and_load(const unsigned char *bytes, unsigned long size, const char *object_name, const char *program_name,
                                      const char *shared_name, int shared_map, const char *sized_name, unsigned entries,
                                      const char *counters_name, char *error, size_t capacity) {
    lvs_xdp_program *x = calloc(1, sizeof(*x));
    x->link = -1;
    x->sockets = -1;
    x->counters = -1;
    x->settings = -1;
    LIBBPF_OPTS(bpf_object_open_opts, open_opts, .object_name = object_name);
    x->object = bpf_object__open_mem(bytes, size, &open_opts);
    if (!x->object) {
        snprintf(error, capacity, "opening the BPF object %s: %s", object_name, strerror(errno));
        free(x);
        return NULL;
    }
    // Each program of an object is loaded; only the one asked for is wanted.
    struct bpf_program *wanted = NULL, *p;
    bpf_object__for_each_program(p, x->object) {
        int is = strcmp(bpf_program__name(p), program_name) == 0;
        bpf_program__set_autoload(p, is);
        if (is) wanted = p;
    }
    struct bpf_map *shared = shared_name ? bpf_object__find_map_by_name(x->object, shared_name) : NULL;
    struct bpf_map *sized = sized_name ? bpf_object__find_map_by_name(x->object, sized_name) : NULL;
    if (!wanted || (shared_name && !shared) || (sized_name && !sized)) {
        snprintf(error, capacity, "the BPF object %s lacks %s", object_name, !wanted ? program_name : !shared ? shared_name : sized_name);
        drop_program(x);
        return NULL;
    }
    if (shared && shared_map >= 0 && bpf_map__reuse_fd(shared, shared_map) < 0) {
        snprintf(error, capacity, "sharing the map %s: %s", shared_name, strerror(errno));
        drop_program(x);
        return NULL;
    }
    if (sized) bpf_map__set_max_entries(sized, entries ? entries : 1);
    if (bpf_object__load(x->object) < 0) {
        snprintf(error, capacity, "loading the BPF program %s: %s", program_name, strerror(errno));
        drop_program(x);
        return NULL;
    }
    x->program = bpf_program__fd(wanted);
    if (counters_name) {
        struct bpf_map *counters = bpf_object__find_map_by_name(x->object, counters_name);
        x->counters = counters ? bpf_map__fd(counters) : -1;
    }
    return x;
}

/// Attaches the loaded XDP program to `ifindex`: natively where the driver
/// can, in generic mode where not. 0, or -1 with the reason in `error`.
static int attach_xdp(lvs_xdp_program *x, int *mode, char *error, size_t capacity) {
    // A link never replaces a program already attached (EBUSY), nor joins one in the other mode.
    LIBBPF_OPTS(bpf_link_create_opts, native_opts, .flags = XDP_FLAGS_DRV_MODE);
    x->link = bpf_link_create(x->program, x->ifindex, BPF_XDP, &native_opts);
    int native_errno = errno;
    if (x->link < 0) {
        LIBBPF_OPTS(bpf_link_create_opts, generic_opts, .flags = XDP_FLAGS_SKB_MODE);
        x->link = bpf_link_create(x->program, x->ifindex, BPF_XDP, &generic_opts);
        if (x->link < 0) {
            snprintf(error, capacity, "attaching XDP: native %s, generic %s", strerror(native_errno), strerror(errno));
            return -1;
        }
        snprintf(error, capacity, "native XDP: %s", strerror(native_errno));
        *mode = LVS_XDP_MODE_GENERIC;
    } else {
        *mode = LVS_XDP_MODE_NATIVE;
    }
    return 0;
}

lvs_xdp_program *lvs_xdp_load(int address_map, unsigned queues, char *error, size_t capacity) {
    lvs_xdp_program *x = open_and_load(lvs_bpf_lvsd_xdp, lvs_bpf_lvsd_xdp_size, "lvsd_xdp", "lvsd_xdp", "lvsd_addresses", address_map,
                                       "lvsd_sockets", queues, "lvsd_xdp_counters", error, capacity);
    if (!x) return NULL;
    struct bpf_map *settings = bpf_object__find_map_by_name(x->object, "lvsd_xdp_settings");
    x->settings = settings ? bpf_map__fd(settings) : -1;
    struct bpf_map *sockets = bpf_object__find_map_by_name(x->object, "lvsd_sockets");
    x->sockets = bpf_map__fd(sockets);
    return x;
}

lvs_xdp_program *lvs_xdp_attach(int ifindex, int address_map, unsigned queues, int *mode, char *error, size_t capacity) {
    lvs_xdp_program *x = lvs_xdp_load(address_map, queues, error, capacity);
    if (!x) return NULL;
    x->ifindex = ifindex;
    if (attach_xdp(x, mode, error, capacity) < 0) { drop_program(x); return NULL; }
    return x;
}

lvs_xdp_program *lvs_decapsulator_load(int vips, unsigned short gue_port, int tc, char *error, size_t capacity) {
    lvs_xdp_program *x = open_and_load(lvs_bpf_lvs_decap, lvs_bpf_lvs_decap_size, "lvs_decap", tc ? "lvs_decap_tc" : "lvs_decap_xdp",
                                       "lvs_decap_vips", vips, NULL, 0, "lvs_decap_counters", error, capacity);
    if (!x) return NULL;
    struct bpf_map *settings = bpf_object__find_map_by_name(x->object, "lvs_decap_settings");
    unsigned slot = LVS_DECAP_GUE_PORT, port = gue_port;
    if (!settings || bpf_map_update_elem(bpf_map__fd(settings), &slot, &port, BPF_ANY) < 0) {
        snprintf(error, capacity, "configuring the decapsulator: %s", strerror(errno));
        drop_program(x);
        return NULL;
    }
    return x;
}

lvs_xdp_program *lvs_decapsulator_attach(int ifindex, int vips, unsigned short gue_port, int tc, int *mode, char *error, size_t capacity) {
    lvs_xdp_program *x = lvs_decapsulator_load(vips, gue_port, tc, error, capacity);
    if (!x) return NULL;
    x->ifindex = ifindex;
    if (!tc) {
        if (attach_xdp(x, mode, error, capacity) < 0) { drop_program(x); return NULL; }
        return x;
    }
    x->link = bpf_link_create(x->program, ifindex, LVS_TCX_INGRESS, NULL);
    if (x->link < 0) {
        snprintf(error, capacity, "attaching to tc ingress (tcx): %s", strerror(errno));
        drop_program(x);
        return NULL;
    }
    *mode = LVS_MODE_TC;
    return x;
}

lvs_xdp_program *lvs_fanout_load(int address_map, char *error, size_t capacity) {
    lvs_xdp_program *x = open_and_load(lvs_bpf_lvsd_fanout, lvs_bpf_lvsd_fanout_size, "lvsd_fanout", "lvsd_fanout", "lvsd_fanout_addresses",
                                       address_map, NULL, 0, NULL, error, capacity);
    if (!x) return NULL;
    struct bpf_map *settings = bpf_object__find_map_by_name(x->object, "lvsd_fanout_settings");
    x->settings = settings ? bpf_map__fd(settings) : -1;
    return x;
}

// MARK: kernel forwarding

struct lvs_forward {
    struct bpf_object *object;
    int program;
    int flows;
    int counters;
    struct lvs_forward_count *counts;
    size_t counts_length;
    /// A tcx link per interface attached (the program leaves with each).
    int links[LVS_FORWARD_INTERFACES];
    unsigned link_count;
};

void lvs_forward_close(lvs_forward *f) {
    if (!f) return;
    for (unsigned i = 0; i < f->link_count; i++) close(f->links[i]);
    if (f->counts) munmap(f->counts, f->counts_length);
    if (f->object) bpf_object__close(f->object);
    free(f);
}

lvs_forward *lvs_forward_open(unsigned flows, unsigned slots, char *error, size_t capacity) {
    lvs_forward *f = calloc(1, sizeof(*f));
    LIBBPF_OPTS(bpf_object_open_opts, open_opts, .object_name = "lvsd_forward");
    f->object = bpf_object__open_mem(lvs_bpf_lvsd_forward, lvs_bpf_lvsd_forward_size, &open_opts);
    if (!f->object) {
        snprintf(error, capacity, "opening the BPF object lvsd_forward: %s", strerror(errno));
        free(f);
        return NULL;
    }
    struct bpf_map *flow_map = bpf_object__find_map_by_name(f->object, "lvsd_forward_flows");
    struct bpf_map *count_map = bpf_object__find_map_by_name(f->object, "lvsd_forward_counts");
    struct bpf_program *program = bpf_object__find_program_by_name(f->object, "lvsd_forward");
    if (!flow_map || !count_map || !program) {
        snprintf(error, capacity, "the BPF object lvsd_forward lacks a map or a program");
        lvs_forward_close(f);
        return NULL;
    }
    bpf_map__set_max_entries(flow_map, flows ? flows : 1);
    bpf_map__set_max_entries(count_map, slots ? slots : 1);
    if (bpf_object__load(f->object) < 0) {
        snprintf(error, capacity, "loading the BPF program lvsd_forward: %s", strerror(errno));
        lvs_forward_close(f);
        return NULL;
    }
    f->program = bpf_program__fd(program);
    f->flows = bpf_map__fd(flow_map);
    struct bpf_map *counters = bpf_object__find_map_by_name(f->object, "lvsd_forward_counters");
    f->counters = counters ? bpf_map__fd(counters) : -1;
    f->counts_length = (size_t)(slots ? slots : 1) * sizeof(struct lvs_forward_count);
    void *counts = mmap(NULL, f->counts_length, PROT_READ, MAP_SHARED, bpf_map__fd(count_map), 0);
    if (counts == MAP_FAILED) {
        snprintf(error, capacity, "mapping the kernel forwarding's counts: %s", strerror(errno));
        lvs_forward_close(f);
        return NULL;
    }
    f->counts = counts;
    return f;
}

int lvs_forward_attach(lvs_forward *f, int ifindex) {
    if (f->link_count == LVS_FORWARD_INTERFACES) return -E2BIG;
    int link = bpf_link_create(f->program, ifindex, LVS_TCX_INGRESS, NULL);
    if (link < 0) return -errno;
    f->links[f->link_count++] = link;
    return 0;
}

const struct lvs_forward_count *lvs_forward_counts(lvs_forward *f) { return f->counts; }

int lvs_forward_set(lvs_forward *f, const struct lvs_forward_key *key, const struct lvs_forward_flow *flow) {
    int rc = flow ? bpf_map_update_elem(f->flows, key, flow, BPF_ANY) : bpf_map_delete_elem(f->flows, key);
    if (rc < 0 && !(flow == NULL && errno == ENOENT)) return -errno;
    return 0;
}

int lvs_forward_forwarded(lvs_forward *f, unsigned long long *total) {
    if (f->counters < 0) return -ENOENT;
    return sum_per_cpu(f->counters, total, LVS_FORWARD_COUNTERS);
}

int lvs_forward_test_run(lvs_forward *f, const unsigned char *frame, unsigned length, unsigned char *out, unsigned *out_length, unsigned *verdict) {
    return test_run(f->program, frame, length, out, out_length, verdict);
}

int lvs_bpf_program_fd(lvs_xdp_program *x) { return x->program; }

int lvs_bpf_setting(lvs_xdp_program *x, unsigned slot, unsigned value) {
    if (x->settings < 0) return -ENOENT;
    return bpf_map_update_elem(x->settings, &slot, &value, BPF_ANY) < 0 ? -errno : 0;
}

void lvs_xdp_detach(lvs_xdp_program *x) {
    if (x) drop_program(x);
}

/// A per-CPU array's first `count` slots, each summed over the CPUs.
static int sum_per_cpu(int map, unsigned long long *totals, unsigned count) {
    int cpus = libbpf_num_possible_cpus();
    if (cpus <= 0) return cpus;
    unsigned long long values[cpus];
    for (unsigned slot = 0; slot < count; slot++) {
        totals[slot] = 0;
        if (bpf_map_lookup_elem(map, &slot, values) < 0) return -errno;
        for (int c = 0; c < cpus; c++) totals[slot] += values[c];
    }
    return 0;
}

int lvs_bpf_counters(lvs_xdp_program *x, unsigned long long *totals, unsigned count) {
    if (x->counters < 0) return -ENOENT;
    return sum_per_cpu(x->counters, totals, count);
}

int lvs_bpf_test_run(lvs_xdp_program *x, const unsigned char *frame, unsigned length, unsigned char *out, unsigned *out_length, unsigned *verdict) {
    return test_run(x->program, frame, length, out, out_length, verdict);
}

static int test_run(int program, const unsigned char *frame, unsigned length, unsigned char *out, unsigned *out_length, unsigned *verdict) {
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = length, .data_out = out, .data_size_out = *out_length, .repeat = 1);
    if (bpf_prog_test_run_opts(program, &opts) < 0) return -errno;
    *out_length = opts.data_size_out;
    *verdict = opts.retval;
    return 0;
}

// MARK: TOA

struct lvs_toa_programs {
    struct bpf_object *object;
    /// BPF links to the cgroup (sock_ops, getpeername4, getpeername6): the
    /// programs stay attached while these are open, and go with the process.
    int links[3];
    int peers;
    int counters;
    int test;
    int test_result;
};

void lvs_toa_close(lvs_toa_programs *t) {
    if (!t) return;
    for (int k = 0; k < 3; k++)
        if (t->links[k] >= 0) close(t->links[k]);
    if (t->object) bpf_object__close(t->object);
    free(t);
}

lvs_toa_programs *lvs_toa_load(char *error, size_t capacity) {
    lvs_toa_programs *t = calloc(1, sizeof(*t));
    for (int k = 0; k < 3; k++) t->links[k] = -1;
    LIBBPF_OPTS(bpf_object_open_opts, open_opts, .object_name = "lvs_toa");
    t->object = bpf_object__open_mem(lvs_bpf_lvs_toa, lvs_bpf_lvs_toa_size, &open_opts);
    if (!t->object) {
        snprintf(error, capacity, "opening the BPF object lvs_toa: %s", strerror(errno));
        free(t);
        return NULL;
    }
    if (bpf_object__load(t->object) < 0) {
        snprintf(error, capacity, "loading the TOA programs: %s", strerror(errno));
        lvs_toa_close(t);
        return NULL;
    }
    t->peers = bpf_map__fd(bpf_object__find_map_by_name(t->object, "lvs_toa_peers"));
    t->counters = bpf_map__fd(bpf_object__find_map_by_name(t->object, "lvs_toa_counters"));
    t->test_result = bpf_map__fd(bpf_object__find_map_by_name(t->object, "lvs_toa_test_result"));
    t->test = bpf_program__fd(bpf_object__find_program_by_name(t->object, "lvs_toa_test"));
    return t;
}

lvs_toa_programs *lvs_toa_attach(const char *cgroup_path, char *error, size_t capacity) {
    lvs_toa_programs *t = lvs_toa_load(error, capacity);
    if (!t) return NULL;
    int cgroup = open(cgroup_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cgroup < 0) {
        snprintf(error, capacity, "opening the cgroup %s: %s", cgroup_path, strerror(errno));
        lvs_toa_close(t);
        return NULL;
    }
    static const char *const names[3] = {"lvs_toa_sockops", "lvs_toa_getpeername4", "lvs_toa_getpeername6"};
    static const enum bpf_attach_type types[3] = {BPF_CGROUP_SOCK_OPS, BPF_CGROUP_INET4_GETPEERNAME, BPF_CGROUP_INET6_GETPEERNAME};
    for (int k = 0; k < 3; k++) {
        int program = bpf_program__fd(bpf_object__find_program_by_name(t->object, names[k]));
        t->links[k] = bpf_link_create(program, cgroup, types[k], NULL);
        if (t->links[k] < 0) {
            snprintf(error, capacity, "attaching %s to the cgroup %s: %s", names[k], cgroup_path, strerror(errno));
            close(cgroup);
            lvs_toa_close(t);
            return NULL;
        }
    }
    close(cgroup);
    return t;
}

int lvs_toa_lookup(lvs_toa_programs *t, const struct lvs_toa_peer *peer, struct lvs_toa_client *client) {
    return bpf_map_lookup_elem(t->peers, peer, client) < 0 ? -errno : 0;
}

int lvs_toa_counters(lvs_toa_programs *t, unsigned long long *totals, unsigned count) {
    return sum_per_cpu(t->counters, totals, count);
}

int lvs_toa_test_run(lvs_toa_programs *t, const unsigned char *frame, unsigned length, int *found, struct lvs_toa_client *client) {
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = length, .repeat = 1);
    if (bpf_prog_test_run_opts(t->test, &opts) < 0) return -errno;
    *found = (int)opts.retval;
    unsigned zero = 0;
    return bpf_map_lookup_elem(t->test_result, &zero, client) < 0 ? -errno : 0;
}

// MARK: sockets

#define XSK_FRAME 2048u
#define XSK_RING 2048u

struct lvs_xsk {
    struct xsk_socket *socket;
    struct xsk_umem *umem;
    void *area;
    size_t area_length;
    struct xsk_ring_prod fill, tx;
    struct xsk_ring_cons completion, rx;
    /// The receive run handed out, until lvs_xsk_release.
    unsigned rx_index, rx_taken;
    /// Transmit frames not in flight.
    unsigned long long free_tx[XSK_RING];
    unsigned free_count;
    /// Receive frames the fill ring had no room for yet: the kernel
    /// publishes what it took from the fill ring lazily, so the ring can
    /// look full although lvsd holds none of its frames.
    unsigned long long unfilled[XSK_RING];
    unsigned unfilled_count;
};

lvs_xsk *lvs_xsk_open(lvs_xdp_program *x, const char *ifname, unsigned queue, int *err) {
    lvs_xsk *s = calloc(1, sizeof(*s));
    // The first XSK_RING frames receive, the rest transmit.
    s->area_length = (size_t)XSK_FRAME * XSK_RING * 2;
    s->area = mmap(NULL, s->area_length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s->area == MAP_FAILED) { *err = -errno; free(s); return NULL; }
    struct xsk_umem_config uc = {
        .fill_size = XSK_RING * 2, .comp_size = XSK_RING, .frame_size = XSK_FRAME, .frame_headroom = 0, .flags = 0,
    };
    int rc = xsk_umem__create(&s->umem, s->area, s->area_length, &s->fill, &s->completion, &uc);
    if (rc) { *err = rc; munmap(s->area, s->area_length); free(s); return NULL; }
    struct xsk_socket_config sc = {
        .rx_size = XSK_RING, .tx_size = XSK_RING,
        .libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
        .xdp_flags = 0,
        .bind_flags = XDP_USE_NEED_WAKEUP,  // zero-copy where the driver has it, copy where not
    };
    rc = xsk_socket__create(&s->socket, ifname, queue, s->umem, &s->rx, &s->tx, &sc);
    if (rc) { *err = rc; xsk_umem__delete(s->umem); munmap(s->area, s->area_length); free(s); return NULL; }
    int fd = xsk_socket__fd(s->socket);
    if (bpf_map_update_elem(x->sockets, &queue, &fd, BPF_ANY) < 0) {
        *err = -errno;
        lvs_xsk_close(s);
        return NULL;
    }
    unsigned index = 0;
    if (xsk_ring_prod__reserve(&s->fill, XSK_RING, &index) != XSK_RING) { *err = -ENOMEM; lvs_xsk_close(s); return NULL; }
    for (unsigned k = 0; k < XSK_RING; k++) *xsk_ring_prod__fill_addr(&s->fill, index + k) = (unsigned long long)k * XSK_FRAME;
    xsk_ring_prod__submit(&s->fill, XSK_RING);
    for (unsigned k = 0; k < XSK_RING; k++) s->free_tx[k] = (unsigned long long)(XSK_RING + k) * XSK_FRAME;
    s->free_count = XSK_RING;
    return s;
}

void lvs_xsk_close(lvs_xsk *s) {
    if (!s) return;
    if (s->socket) xsk_socket__delete(s->socket);
    if (s->umem) xsk_umem__delete(s->umem);
    munmap(s->area, s->area_length);
    free(s);
}

int lvs_xsk_fd(lvs_xsk *s) { return xsk_socket__fd(s->socket); }

static void refill(lvs_xsk *s) {
    unsigned index = 0;
    unsigned n = s->unfilled_count ? xsk_ring_prod__reserve(&s->fill, s->unfilled_count, &index) : 0;
    for (unsigned k = 0; k < n; k++) *xsk_ring_prod__fill_addr(&s->fill, index + k) = s->unfilled[--s->unfilled_count];
    if (n) xsk_ring_prod__submit(&s->fill, n);
}

unsigned lvs_xsk_receive(lvs_xsk *s, const unsigned char **frames, unsigned *lengths, unsigned max) {
    refill(s);
    unsigned index = 0;
    unsigned n = xsk_ring_cons__peek(&s->rx, max, &index);
    for (unsigned k = 0; k < n; k++) {
        const struct xdp_desc *d = xsk_ring_cons__rx_desc(&s->rx, index + k);
        frames[k] = xsk_umem__get_data(s->area, d->addr);
        lengths[k] = d->len;
    }
    s->rx_index = index;
    s->rx_taken = n;
    if (n == 0 && xsk_ring_prod__needs_wakeup(&s->fill)) recvfrom(xsk_socket__fd(s->socket), NULL, 0, MSG_DONTWAIT, NULL, NULL);
    return n;
}

void lvs_xsk_release(lvs_xsk *s) {
    for (unsigned k = 0; k < s->rx_taken; k++)
        s->unfilled[s->unfilled_count++] = xsk_ring_cons__rx_desc(&s->rx, s->rx_index + k)->addr & ~(unsigned long long)(XSK_FRAME - 1);
    xsk_ring_cons__release(&s->rx, s->rx_taken);
    s->rx_taken = 0;
    refill(s);
}

static void reap(lvs_xsk *s) {
    unsigned index = 0;
    unsigned n = xsk_ring_cons__peek(&s->completion, XSK_RING, &index);
    for (unsigned k = 0; k < n; k++) s->free_tx[s->free_count++] = *xsk_ring_cons__comp_addr(&s->completion, index + k);
    xsk_ring_cons__release(&s->completion, n);
}

int lvs_xsk_send(lvs_xsk *s, const unsigned char *const *frames, const unsigned *lengths, unsigned count) {
    reap(s);
    unsigned n = count < s->free_count ? count : s->free_count;
    unsigned index = 0;
    if (n) n = xsk_ring_prod__reserve(&s->tx, n, &index);
    for (unsigned k = 0; k < n; k++) {
        unsigned long long addr = s->free_tx[--s->free_count];
        unsigned length = lengths[k] > XSK_FRAME ? XSK_FRAME : lengths[k];
        memcpy(xsk_umem__get_data(s->area, addr), frames[k], length);
        struct xdp_desc *d = xsk_ring_prod__tx_desc(&s->tx, index + k);
        d->addr = addr;
        d->len = length;
        d->options = 0;
    }
    if (n == 0) return 0;
    xsk_ring_prod__submit(&s->tx, n);
    // Copy mode sends a bounded number of frames per kick and says EAGAIN for the rest.
    for (int k = 0; k < 16 && xsk_ring_prod__needs_wakeup(&s->tx); k++) {
        if (sendto(xsk_socket__fd(s->socket), NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0) break;
        if (errno != EAGAIN && errno != EBUSY && errno != EINTR) break;
    }
    return (int)n;
}
