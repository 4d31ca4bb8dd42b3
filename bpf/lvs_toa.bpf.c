// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// lvs-realserver's TOA, as the seed means it and toa.ko does it, without a
// kernel module: a FULLNAT director carries the client's address and port in
// TCP option 254 (length 8: port, IPv4; length 20: port, IPv6) on the ACK
// that completes the handshake (and on the first data). The sock_ops program
// reads it there, for sockets of the cgroup it is attached to, and keeps the
// client in the socket's local storage (and, for the query socket, in an LRU
// map by the connection's peer); the getpeername programs answer with it, which is also
// what accept() reports. So an unmodified application sees the real client.
// A connection without TOA, or with a malformed one, keeps its own peer.
#include "lvs_bpf.h"

/// The client, per socket: freed with the socket.
struct {
    __uint(type, BPF_MAP_TYPE_SK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct lvs_toa_client);
} lvs_toa_sockets SEC(".maps");

/// The client, by the connection's peer as the server sees it, for
/// `lvs-realserver toa --query`: least recently used entries go first.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, struct lvs_toa_peer);
    __type(value, struct lvs_toa_client);
} lvs_toa_peers SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, LVS_TOA_COUNTERS);
    __type(key, __u32);
    __type(value, __u64);
} lvs_toa_counters SEC(".maps");

/// What the parser test (`lvs_toa_test`) found, for the tests to read.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct lvs_toa_client);
} lvs_toa_test_result SEC(".maps");

static __always_inline void count(__u32 slot) {
    __u64 *n = bpf_map_lookup_elem(&lvs_toa_counters, &slot);
    if (n) *n += 1;
}

enum { TOA_KIND = 254, TOA_NONE = 0, TOA_MALFORMED = -1 };

/// The TOA in the options of the TCP header at `tcp` (in packet memory up to
/// `end`): its length (8 or 20) with the client in `out`, TOA_NONE, or
/// TOA_MALFORMED for options that run past the header or an option 254 of
/// a length neither family has.
static __always_inline int toa_find(const __u8 *tcp, const void *end, struct lvs_toa_client *out) {
    if (!LVS_FITS(tcp, 20, end)) return TOA_MALFORMED;
    int n = (int)(tcp[12] >> 4) * 4 - 20;
    if (n < 0) return TOA_MALFORMED;
    // Staged on the stack at constant offsets: the verifier then allows the
    // parser's variable offsets (masked to the buffer).
    __u8 opts[64] = {};
    for (int k = 0; k < 40; k++) {
        if (k >= n) break;
        if (!LVS_FITS(tcp + 20 + k, 1, end)) return TOA_MALFORMED;
        opts[k] = tcp[20 + k];
    }
    int i = 0;
    for (int k = 0; k < 40; k++) {
        if (i >= n) return TOA_NONE;
        __u8 kind = opts[i & 63];
        if (kind == 0) return TOA_NONE;
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 1 >= n) return TOA_MALFORMED;
        int length = opts[(i + 1) & 63];
        if (length < 2 || i + length > n) return TOA_MALFORMED;
        if (kind == TOA_KIND) {
            if (length != 8 && length != 20) return TOA_MALFORMED;
            __builtin_memset(out, 0, sizeof(*out));
            out->family = length == 8 ? 4 : 6;
            out->port = (__u16)opts[(i + 2) & 63] | (__u16)opts[(i + 3) & 63] << 8;
            for (int b = 0; b < 16; b++) {
                if (b >= length - 4) break;
                out->address[b] = opts[(i + 4 + b) & 63];
            }
            return length;
        }
        i += length;
    }
    return TOA_NONE;
}

/// The peer's address as a key: IPv4 as ::ffff:a.b.c.d. The context's
/// words are read one by one (volatile): the verifier refuses the 8-byte
/// load a compiler would merge two of them into.
static __always_inline void key_address(__u8 *key, const struct bpf_sock_ops *skops) {
    if (skops->family == 2) {
        __u32 ip4 = skops->remote_ip4;
        __builtin_memset(key, 0, 10);
        key[10] = 0xff;
        key[11] = 0xff;
        __builtin_memcpy(key + 12, &ip4, 4);
        return;
    }
    const volatile __u32 *words = skops->remote_ip6;
    for (int k = 0; k < 4; k++) {
        __u32 w = words[k];
        __builtin_memcpy(key + 4 * k, &w, 4);
    }
}

SEC("sockops")
int lvs_toa_sockops(struct bpf_sock_ops *skops) {
    if (skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) return 1;
    struct lvs_toa_client client;
    int found = toa_find(skops->skb_data, skops->skb_data_end, &client);
    if (found <= 0) {
        count(found == TOA_NONE ? LVS_TOA_NONE : LVS_TOA_MALFORMED);
        return 1;
    }
    // A socket answers with an address of its own family (an IPv6 socket
    // also with an IPv4 client, mapped); an IPv4 socket cannot name an IPv6 client.
    if (skops->family == 2 && client.family != 4) {
        count(LVS_TOA_MALFORMED);
        return 1;
    }
    struct bpf_sock *sk = skops->sk;
    if (!sk) return 1;
    struct lvs_toa_client *kept = bpf_sk_storage_get(&lvs_toa_sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!kept) return 1;
    *kept = client;
    struct lvs_toa_peer peer = {};
    key_address(peer.address, skops);
    // remote_port holds the port in network order in its upper half.
    peer.port = (__u16)(skops->remote_port >> 16);
    bpf_map_update_elem(&lvs_toa_peers, &peer, &client, BPF_ANY);
    count(LVS_TOA_FOUND);
    return 1;
}

SEC("cgroup/getpeername4")
int lvs_toa_getpeername4(struct bpf_sock_addr *ctx) {
    struct bpf_sock *sk = ctx->sk;
    if (!sk) return 1;
    struct lvs_toa_client *c = bpf_sk_storage_get(&lvs_toa_sockets, sk, 0, 0);
    if (!c || c->family != 4) return 1;
    __u32 address;
    __builtin_memcpy(&address, c->address, 4);
    ctx->user_ip4 = address;
    ctx->user_port = c->port;
    count(LVS_TOA_ANSWERED);
    return 1;
}

SEC("cgroup/getpeername6")
int lvs_toa_getpeername6(struct bpf_sock_addr *ctx) {
    struct bpf_sock *sk = ctx->sk;
    if (!sk) return 1;
    struct lvs_toa_client *c = bpf_sk_storage_get(&lvs_toa_sockets, sk, 0, 0);
    if (!c || c->family == 0) return 1;
    __u32 words[4];
    if (c->family == 4) {
        words[0] = 0;
        words[1] = 0;
        words[2] = bpf_htonl(0xffff);
        __builtin_memcpy(&words[3], c->address, 4);
    } else {
        __builtin_memcpy(words, c->address, 16);
    }
    ctx->user_ip6[0] = words[0];
    ctx->user_ip6[1] = words[1];
    ctx->user_ip6[2] = words[2];
    ctx->user_ip6[3] = words[3];
    ctx->user_port = c->port;
    count(LVS_TOA_ANSWERED);
    return 1;
}

/// The parser on a test frame (Ethernet, IPv4 or IPv6 without extension
/// headers, TCP), run with BPF_PROG_TEST_RUN: returns what `toa_find` does
/// (as an unsigned number) and leaves the client in `lvs_toa_test_result`.
SEC("tc")
int lvs_toa_test(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if (!LVS_FITS(eth, sizeof(*eth), end)) return TOA_MALFORMED;
    const __u8 *tcp;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if (!LVS_FITS(ip, sizeof(*ip), end) || ip->protocol != IPPROTO_TCP || ip->ihl != 5) return TOA_MALFORMED;
        tcp = (const __u8 *)(ip + 1);
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if (!LVS_FITS(ip6, sizeof(*ip6), end) || ip6->nexthdr != IPPROTO_TCP) return TOA_MALFORMED;
        tcp = (const __u8 *)(ip6 + 1);
    } else {
        return TOA_MALFORMED;
    }
    struct lvs_toa_client client = {};
    int found = toa_find(tcp, end, &client);
    __u32 zero = 0;
    bpf_map_update_elem(&lvs_toa_test_result, &zero, &client, BPF_ANY);
    return found;
}
