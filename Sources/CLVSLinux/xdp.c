// The AF_XDP backend: an XDP program that sends lvsd's frames to an AF_XDP
// socket and passes every other frame to the kernel, the sockets, and the
// UMEM they share. libbpf creates the maps and loads the program; libxdp
// opens the sockets. Also lvs-realserver's tunnel decapsulator, for tc
// ingress or XDP.
//
// Each program is a few dozen lines of logic, so it is written here as BPF
// instructions rather than built by clang -target bpf: nothing needs an
// object file at run time and the build needs no BPF toolchain.
#define _GNU_SOURCE
#include <errno.h>
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

// MARK: the program

#define INSN(c, d, s, o, i) ((struct bpf_insn){ .code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i) })
#define MOV_REG(d, s)       INSN(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)
#define MOV_IMM(d, i)       INSN(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, i)
#define ADD_IMM(d, i)       INSN(BPF_ALU64 | BPF_ADD | BPF_K, d, 0, 0, i)
#define ADD_REG(d, s)       INSN(BPF_ALU64 | BPF_ADD | BPF_X, d, s, 0, 0)
#define AND_IMM(d, i)       INSN(BPF_ALU64 | BPF_AND | BPF_K, d, 0, 0, i)
#define LOAD(size, d, s, o) INSN(BPF_LDX | BPF_MEM | (size), d, s, o, 0)
#define STORE(size, d, s, o) INSN(BPF_STX | BPF_MEM | (size), d, s, o, 0)
#define STORE_IMM(size, d, o, i) INSN(BPF_ST | BPF_MEM | (size), d, 0, o, i)
#define CALL(f)             INSN(BPF_JMP | BPF_CALL, 0, 0, 0, f)
#define EXIT()              INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
#define FP 10

enum { L_NOVLAN, L_V4, L_V4_SOURCE, L_V6, L_V6_SOURCE, L_REDIRECT, L_PASS,
       L_GUE, L_INNER, L_INNER4, L_INNER6, L_STRIP, L_COUNT };

typedef struct {
    struct bpf_insn insn[160];
    int count;
    int label[L_COUNT];
    int fixup[64], fixup_label[64], fixups;
} program_text;

static void emit(program_text *p, struct bpf_insn i) { p->insn[p->count++] = i; }
static void resolve(program_text *p) {
    for (int k = 0; k < p->fixups; k++) {
        int at = p->fixup[k];
        p->insn[at].off = (short)(p->label[p->fixup_label[k]] - at - 1);
    }
}
static void label(program_text *p, int l) { p->label[l] = p->count; }
static void jump(program_text *p, int op, int src_kind, int dst, int src_or_imm, int l) {
    p->fixup[p->fixups] = p->count;
    p->fixup_label[p->fixups++] = l;
    if (src_kind == BPF_X) emit(p, INSN(BPF_JMP | op | BPF_X, dst, src_or_imm, 0, 0));
    else emit(p, INSN(BPF_JMP | op | BPF_K, dst, 0, 0, src_or_imm));
}
static void load_map(program_text *p, int d, int fd) {
    emit(p, INSN(BPF_LD | BPF_DW | BPF_IMM, d, BPF_PSEUDO_MAP_FD, 0, fd));
    emit(p, INSN(0, 0, 0, 0, 0));
}
/// r0 = flags of the 16-byte key at fp-16 & `mask`, or 0.
static void lookup(program_text *p, int map, int mask, int miss) {
    load_map(p, BPF_REG_1, map);
    emit(p, MOV_REG(BPF_REG_2, FP));
    emit(p, ADD_IMM(BPF_REG_2, -16));
    emit(p, CALL(BPF_FUNC_map_lookup_elem));
    jump(p, BPF_JEQ, BPF_K, BPF_REG_0, 0, miss);
    emit(p, LOAD(BPF_W, BPF_REG_0, BPF_REG_0, 0));
    if (mask) emit(p, AND_IMM(BPF_REG_0, mask));
}

/// To L_PASS unless `bytes` bytes from the pointer in `base` lie inside the
/// frame (r8 its end), checked through `scratch` as the verifier wants.
static void need(program_text *p, int base, int bytes, int scratch) {
    emit(p, MOV_REG(scratch, base));
    emit(p, ADD_IMM(scratch, bytes));
    jump(p, BPF_JGT, BPF_X, scratch, BPF_REG_8, L_PASS);
}

/// r7 the frame and r8 its end, from the context in r6 (an XDP or a tc one).
static void frame_pointers(program_text *p, int tc) {
    emit(p, LOAD(BPF_W, BPF_REG_7, BPF_REG_6, tc ? offsetof(struct __sk_buff, data) : offsetof(struct xdp_md, data)));
    emit(p, LOAD(BPF_W, BPF_REG_8, BPF_REG_6, tc ? offsetof(struct __sk_buff, data_end) : offsetof(struct xdp_md, data_end)));
}

/// r6 the context, r7 the frame, r8 its end, r3 the EtherType as loaded
/// (little-endian: 0x0800 reads 0x0008); to L_PASS without an Ethernet header.
static void prologue(program_text *p, int tc) {
    emit(p, MOV_REG(BPF_REG_6, BPF_REG_1));
    frame_pointers(p, tc);
    need(p, BPF_REG_7, 14, BPF_REG_2);
    emit(p, LOAD(BPF_H, BPF_REG_3, BPF_REG_7, 12));
}

/// The address at r7 + `offset` into the key at fp-16 (IPv4: its last four bytes).
static void key_from(program_text *p, int v6, int offset) {
    if (v6) {
        emit(p, LOAD(BPF_DW, BPF_REG_3, BPF_REG_7, offset));
        emit(p, STORE(BPF_DW, FP, BPF_REG_3, -16));
        emit(p, LOAD(BPF_DW, BPF_REG_3, BPF_REG_7, offset + 8));
        emit(p, STORE(BPF_DW, FP, BPF_REG_3, -8));
    } else {
        emit(p, LOAD(BPF_W, BPF_REG_3, BPF_REG_7, offset));
        emit(p, STORE(BPF_W, FP, BPF_REG_3, -4));
    }
}

/// To lvsd if the destination is owned; to the kernel if it is the host's;
/// else to lvsd if the source is a NAT real server; else to the kernel.
static void classify(program_text *p, int addresses, int v6, int source) {
    key_from(p, v6, v6 ? 24 : 16);
    lookup(p, addresses, 0, source);
    emit(p, MOV_REG(BPF_REG_1, BPF_REG_0));
    emit(p, AND_IMM(BPF_REG_1, LVS_XDP_OWNED));
    jump(p, BPF_JNE, BPF_K, BPF_REG_1, 0, L_REDIRECT);
    emit(p, AND_IMM(BPF_REG_0, LVS_XDP_HOST));
    jump(p, BPF_JNE, BPF_K, BPF_REG_0, 0, L_PASS);
    label(p, source);
    key_from(p, v6, v6 ? 8 : 12);
    lookup(p, addresses, LVS_XDP_REPLY_SOURCE, L_PASS);
    jump(p, BPF_JNE, BPF_K, BPF_REG_0, 0, L_REDIRECT);
    jump(p, BPF_JA, BPF_K, 0, 0, L_PASS);
}

// Registers: r6 the context, r7 the network header, r8 the frame's end.
static void build(program_text *p, int addresses, int sockets) {
    memset(p, 0, sizeof(*p));
    prologue(p, 0);
    emit(p, MOV_IMM(BPF_REG_9, 14));
    // One 802.1Q tag, as the engine takes. (Loads are little-endian: 0x8100 reads 0x0081.)
    jump(p, BPF_JNE, BPF_K, BPF_REG_3, 0x0081, L_NOVLAN);
    need(p, BPF_REG_7, 18, BPF_REG_2);
    emit(p, LOAD(BPF_H, BPF_REG_3, BPF_REG_7, 16));
    emit(p, MOV_IMM(BPF_REG_9, 18));
    label(p, L_NOVLAN);
    emit(p, ADD_REG(BPF_REG_7, BPF_REG_9));
    jump(p, BPF_JEQ, BPF_K, BPF_REG_3, 0x0008, L_V4);
    jump(p, BPF_JEQ, BPF_K, BPF_REG_3, 0xDD86, L_V6);
    jump(p, BPF_JA, BPF_K, 0, 0, L_PASS);

    // IPv4: the key is the IPv4-mapped IPv6 address ::ffff:a.b.c.d.
    label(p, L_V4);
    need(p, BPF_REG_7, 20, BPF_REG_2);
    emit(p, STORE_IMM(BPF_DW, FP, -16, 0));
    emit(p, STORE_IMM(BPF_W, FP, -8, (int)0xFFFF0000));
    classify(p, addresses, 0, L_V4_SOURCE);

    label(p, L_V6);
    need(p, BPF_REG_7, 40, BPF_REG_2);
    classify(p, addresses, 1, L_V6_SOURCE);

    // A queue without a socket passes the frame (the flags' XDP_PASS).
    label(p, L_REDIRECT);
    load_map(p, BPF_REG_1, sockets);
    emit(p, LOAD(BPF_W, BPF_REG_2, BPF_REG_6, offsetof(struct xdp_md, rx_queue_index)));
    emit(p, MOV_IMM(BPF_REG_3, XDP_PASS));
    emit(p, CALL(BPF_FUNC_redirect_map));
    emit(p, EXIT());
    label(p, L_PASS);
    emit(p, MOV_IMM(BPF_REG_0, XDP_PASS));
    emit(p, EXIT());

    resolve(p);
}

// Newer than this machine's headers (Linux 6.1): tcx (6.6) and the
// decapsulation flags of bpf_skb_adjust_room (6.3).
enum { LVS_TCX_INGRESS = 46, LVS_TCX_NEXT = -1, LVS_ADJ_ROOM_DECAP_IPV4 = 1 << 7, LVS_ADJ_ROOM_DECAP_IPV6 = 1 << 8 };

/// A real server's decapsulator: IPIP, IPv6-in-IPv4, IPv4- and
/// IPv6-in-IPv6 and (with `gue_port`) GUE variant 0, each only when the
/// inner destination is in `vips`, lose their outer headers and go on into
/// the kernel as if they had arrived bare. Anything else passes untouched.
/// As a tc program (`tc`) it works on the skb; as an XDP one, on the frame
/// before there is one (but veth copies a frame short of XDP's headroom).
// Registers: r6 the context, r7 the frame, r8 its end, r9 the outer
// headers' length (from the end of the Ethernet header to the inner one).
static void build_decapsulator(program_text *p, int vips, unsigned short gue_port, int tc) {
    memset(p, 0, sizeof(*p));
    prologue(p, tc);
    jump(p, BPF_JEQ, BPF_K, BPF_REG_3, 0x0008, L_V4);
    jump(p, BPF_JEQ, BPF_K, BPF_REG_3, 0xDD86, L_V6);
    jump(p, BPF_JA, BPF_K, 0, 0, L_PASS);

    // An outer IPv4 header without options, not a fragment (DF allowed).
    label(p, L_V4);
    need(p, BPF_REG_7, 34, BPF_REG_2);
    emit(p, LOAD(BPF_B, BPF_REG_3, BPF_REG_7, 14));
    jump(p, BPF_JNE, BPF_K, BPF_REG_3, 0x45, L_PASS);
    emit(p, LOAD(BPF_H, BPF_REG_3, BPF_REG_7, 20));
    emit(p, AND_IMM(BPF_REG_3, 0xFF3F));
    jump(p, BPF_JNE, BPF_K, BPF_REG_3, 0, L_PASS);
    emit(p, LOAD(BPF_B, BPF_REG_4, BPF_REG_7, 23));
    emit(p, MOV_IMM(BPF_REG_9, 20));
    jump(p, BPF_JA, BPF_K, 0, 0, gue_port ? L_GUE : L_INNER);

    // An outer IPv6 header whose next header is the tunnel's (no extension headers).
    label(p, L_V6);
    need(p, BPF_REG_7, 54, BPF_REG_2);
    emit(p, LOAD(BPF_B, BPF_REG_4, BPF_REG_7, 20));
    emit(p, MOV_IMM(BPF_REG_9, 40));

    // UDP to the GUE port, then the 4-byte GUE header and its hlen words of options.
    label(p, L_GUE);
    if (gue_port) {
        jump(p, BPF_JNE, BPF_K, BPF_REG_4, IPPROTO_UDP, L_INNER);
        emit(p, MOV_REG(BPF_REG_2, BPF_REG_7));
        emit(p, ADD_REG(BPF_REG_2, BPF_REG_9));
        need(p, BPF_REG_2, 14 + 12, BPF_REG_3);
        emit(p, LOAD(BPF_H, BPF_REG_3, BPF_REG_2, 14 + 2));
        jump(p, BPF_JNE, BPF_K, BPF_REG_3, (unsigned short)((gue_port >> 8) | (gue_port << 8)), L_PASS);
        emit(p, LOAD(BPF_B, BPF_REG_3, BPF_REG_2, 14 + 8));
        emit(p, MOV_REG(BPF_REG_1, BPF_REG_3));
        emit(p, INSN(BPF_ALU64 | BPF_RSH | BPF_K, BPF_REG_1, 0, 0, 6));
        jump(p, BPF_JNE, BPF_K, BPF_REG_1, 0, L_PASS);
        emit(p, LOAD(BPF_B, BPF_REG_4, BPF_REG_2, 14 + 9));
        emit(p, AND_IMM(BPF_REG_3, 0x1F));
        emit(p, INSN(BPF_ALU64 | BPF_LSH | BPF_K, BPF_REG_3, 0, 0, 2));
        emit(p, ADD_REG(BPF_REG_9, BPF_REG_3));
        emit(p, ADD_IMM(BPF_REG_9, 12));
    }

    // r2: the inner header; its destination into the key at fp-16, its EtherType at fp-24.
    label(p, L_INNER);
    emit(p, MOV_REG(BPF_REG_2, BPF_REG_7));
    emit(p, ADD_REG(BPF_REG_2, BPF_REG_9));
    jump(p, BPF_JEQ, BPF_K, BPF_REG_4, IPPROTO_IPIP, L_INNER4);
    jump(p, BPF_JEQ, BPF_K, BPF_REG_4, IPPROTO_IPV6, L_INNER6);
    jump(p, BPF_JA, BPF_K, 0, 0, L_PASS);
    label(p, L_INNER4);
    need(p, BPF_REG_2, 14 + 20, BPF_REG_3);
    emit(p, STORE_IMM(BPF_DW, FP, -16, 0));
    emit(p, STORE_IMM(BPF_W, FP, -8, (int)0xFFFF0000));
    emit(p, LOAD(BPF_W, BPF_REG_3, BPF_REG_2, 14 + 16));
    emit(p, STORE(BPF_W, FP, BPF_REG_3, -4));
    emit(p, STORE_IMM(BPF_DW, FP, -24, 0x0008));
    emit(p, STORE_IMM(BPF_DW, FP, -32, LVS_ADJ_ROOM_DECAP_IPV4));
    jump(p, BPF_JA, BPF_K, 0, 0, L_STRIP);
    label(p, L_INNER6);
    need(p, BPF_REG_2, 14 + 40, BPF_REG_3);
    emit(p, LOAD(BPF_DW, BPF_REG_3, BPF_REG_2, 14 + 24));
    emit(p, STORE(BPF_DW, FP, BPF_REG_3, -16));
    emit(p, LOAD(BPF_DW, BPF_REG_3, BPF_REG_2, 14 + 32));
    emit(p, STORE(BPF_DW, FP, BPF_REG_3, -8));
    emit(p, STORE_IMM(BPF_DW, FP, -24, 0xDD86));
    emit(p, STORE_IMM(BPF_DW, FP, -32, LVS_ADJ_ROOM_DECAP_IPV6));

    label(p, L_STRIP);
    lookup(p, vips, 0, L_PASS);
    if (tc) {
        // A VIP's: the kernel removes the outer headers (the flag names the inner family), then the EtherType follows.
        emit(p, MOV_REG(BPF_REG_1, BPF_REG_6));
        emit(p, MOV_REG(BPF_REG_2, BPF_REG_9));
        emit(p, INSN(BPF_ALU64 | BPF_NEG, BPF_REG_2, 0, 0, 0));
        emit(p, MOV_IMM(BPF_REG_3, BPF_ADJ_ROOM_MAC));
        emit(p, LOAD(BPF_DW, BPF_REG_4, FP, -32));
        emit(p, CALL(BPF_FUNC_skb_adjust_room));
        jump(p, BPF_JNE, BPF_K, BPF_REG_0, 0, L_PASS);
        frame_pointers(p, tc);
        need(p, BPF_REG_7, 14, BPF_REG_2);
        emit(p, LOAD(BPF_H, BPF_REG_3, FP, -24));
        emit(p, STORE(BPF_H, BPF_REG_7, BPF_REG_3, 12));
    } else {
        // A VIP's: the Ethernet header moves up to the inner header, the head follows it.
        emit(p, MOV_REG(BPF_REG_2, BPF_REG_7));
        emit(p, ADD_REG(BPF_REG_2, BPF_REG_9));
        need(p, BPF_REG_2, 14, BPF_REG_3);
        for (int o = 0; o < 12; o += 4) {
            emit(p, LOAD(BPF_W, BPF_REG_3, BPF_REG_7, o));
            emit(p, STORE(BPF_W, BPF_REG_2, BPF_REG_3, o));
        }
        emit(p, LOAD(BPF_H, BPF_REG_3, FP, -24));
        emit(p, STORE(BPF_H, BPF_REG_2, BPF_REG_3, 12));
        emit(p, MOV_REG(BPF_REG_1, BPF_REG_6));
        emit(p, MOV_REG(BPF_REG_2, BPF_REG_9));
        emit(p, CALL(BPF_FUNC_xdp_adjust_head));
    }
    label(p, L_PASS);
    emit(p, MOV_IMM(BPF_REG_0, tc ? LVS_TCX_NEXT : XDP_PASS));
    emit(p, EXIT());
    resolve(p);
}

// MARK: maps and attachment

struct lvs_xdp_program {
    int ifindex;
    int program;
    int sockets;
    /// A BPF link: the program stays attached while this descriptor is
    /// open, so a process that dies, even by SIGKILL, leaves none behind.
    int link;
};

int lvs_xdp_address_map(unsigned capacity) {
    LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_NO_PREALLOC);
    int fd = bpf_map_create(BPF_MAP_TYPE_HASH, "lvsd_addresses", 16, sizeof(unsigned), capacity, &opts);
    return fd < 0 ? -errno : fd;
}

int lvs_xdp_address_set(int map, const unsigned char *address16, unsigned flags) {
    int rc = flags ? bpf_map_update_elem(map, address16, &flags, BPF_ANY) : bpf_map_delete_elem(map, address16);
    if (rc < 0 && !(flags == 0 && errno == ENOENT)) return -errno;
    return 0;
}

/// Loads `text` as a program of `type`: 0, or -1 with the reason (the
/// verifier's, when it refused) in `error`.
static int load(lvs_xdp_program *x, program_text *text, enum bpf_prog_type type, const char *name, char *error, size_t capacity) {
    char log[4096] = "";
    LIBBPF_OPTS(bpf_prog_load_opts, opts, .log_buf = log, .log_size = sizeof(log), .log_level = 0);
    x->program = bpf_prog_load(type, name, "GPL", text->insn, (size_t)text->count, &opts);
    if (x->program < 0) {
        int e = errno;
        if (!log[0]) {  // the verifier's reasons, only asked for on failure
            opts.log_level = 1;
            bpf_prog_load(type, name, "GPL", text->insn, (size_t)text->count, &opts);
        }
        snprintf(error, capacity, "loading the BPF program: %s%s%.400s", strerror(e), log[0] ? ": " : "", log);
        return -1;
    }
    return 0;
}

/// Loads `text` as XDP and attaches it to `ifindex`: natively where the
/// driver can, in generic mode where not. 0, or -1 with the reason in `error`.
static int load_and_attach(lvs_xdp_program *x, program_text *text, const char *name, int *mode, char *error, size_t capacity) {
    if (load(x, text, BPF_PROG_TYPE_XDP, name, error, capacity) < 0) return -1;
    // A link never replaces a program already attached (EBUSY), nor joins one in the other mode.
    LIBBPF_OPTS(bpf_link_create_opts, native_opts, .flags = XDP_FLAGS_DRV_MODE);
    x->link = bpf_link_create(x->program, x->ifindex, BPF_XDP, &native_opts);
    int native_errno = errno;
    if (x->link < 0) {
        LIBBPF_OPTS(bpf_link_create_opts, generic_opts, .flags = XDP_FLAGS_SKB_MODE);
        x->link = bpf_link_create(x->program, x->ifindex, BPF_XDP, &generic_opts);
        if (x->link < 0) {
            snprintf(error, capacity, "attaching XDP: native %s, generic %s", strerror(native_errno), strerror(errno));
            close(x->program);
            return -1;
        }
        snprintf(error, capacity, "native XDP: %s", strerror(native_errno));
        *mode = LVS_XDP_MODE_GENERIC;
    } else {
        *mode = LVS_XDP_MODE_NATIVE;
    }
    return 0;
}

lvs_xdp_program *lvs_xdp_attach(int ifindex, int address_map, unsigned queues, int *mode, char *error, size_t capacity) {
    lvs_xdp_program *x = calloc(1, sizeof(*x));
    x->ifindex = ifindex;
    x->sockets = bpf_map_create(BPF_MAP_TYPE_XSKMAP, "lvsd_sockets", sizeof(int), sizeof(int), queues ? queues : 1, NULL);
    if (x->sockets < 0) {
        snprintf(error, capacity, "XSKMAP: %s", strerror(errno));
        free(x);
        return NULL;
    }
    program_text text;
    build(&text, address_map, x->sockets);
    if (load_and_attach(x, &text, "lvsd_xdp", mode, error, capacity) < 0) {
        close(x->sockets);
        free(x);
        return NULL;
    }
    return x;
}

lvs_xdp_program *lvs_decapsulator_attach(int ifindex, int vips, unsigned short gue_port, int tc, int *mode, char *error, size_t capacity) {
    lvs_xdp_program *x = calloc(1, sizeof(*x));
    x->ifindex = ifindex;
    x->sockets = -1;
    program_text text;
    build_decapsulator(&text, vips, gue_port, tc);
    if (!tc) {
        if (load_and_attach(x, &text, "lvs_decap", mode, error, capacity) < 0) { free(x); return NULL; }
        return x;
    }
    if (load(x, &text, BPF_PROG_TYPE_SCHED_CLS, "lvs_decap", error, capacity) < 0) { free(x); return NULL; }
    x->link = bpf_link_create(x->program, ifindex, LVS_TCX_INGRESS, NULL);
    if (x->link < 0) {
        snprintf(error, capacity, "attaching to tc ingress (tcx): %s", strerror(errno));
        close(x->program);
        free(x);
        return NULL;
    }
    *mode = LVS_MODE_TC;
    return x;
}

void lvs_xdp_detach(lvs_xdp_program *x) {
    if (!x) return;
    close(x->link);
    close(x->program);
    if (x->sockets >= 0) close(x->sockets);
    free(x);
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
