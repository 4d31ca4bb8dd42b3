// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// lvsd's XDP program (--io xdp): every frame that is lvsd's goes to the
// AF_XDP socket of the queue it came in on; the rest passes to the kernel,
// where lvsd's AF_PACKET ring still sees it (ARP, neighbour discovery).
// lvsd's: to an owned address (a VIP or a FULLNAT local address), or, unless
// it is to one of the host's own addresses (a health check's answer), from
// a NAT real server, whose reply lvsd rewrites.
#include "lvs_bpf.h"

/// Owned, host and reply-source addresses, shared by every interface's program.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 16384);
    __type(key, struct lvs_address_key);
    __type(value, __u32);
} lvsd_addresses SEC(".maps");

/// The AF_XDP socket of each receive queue (sized to the interface's queues at load).
struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} lvsd_sockets SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, LVS_XDP_COUNTERS);
    __type(key, __u32);
    __type(value, __u64);
} lvsd_xdp_counters SEC(".maps");

static __always_inline __u32 lvs_flags(struct lvs_address_key *k) {
    __u32 *flags = bpf_map_lookup_elem(&lvsd_addresses, k);
    return flags ? *flags : 0;
}

/// Whether a frame from `source` to `destination` is lvsd's.
static __always_inline int lvs_is_ours(struct lvs_address_key *destination, struct lvs_address_key *source) {
    __u32 to = lvs_flags(destination);
    if (to & LVS_XDP_OWNED) return 1;
    if (to & LVS_XDP_HOST) return 0;
    return (lvs_flags(source) & LVS_XDP_REPLY_SOURCE) != 0;
}

SEC("xdp")
int lvsd_xdp(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if (!LVS_FITS(eth, sizeof(*eth), end)) goto truncated;
    __be16 proto = eth->h_proto;
    void *l3 = eth + 1;
    // One 802.1Q tag, as the engine takes.
    if (proto == bpf_htons(ETH_P_8021Q)) {
        struct lvs_vlan_hdr *vlan = l3;
        if (!LVS_FITS(vlan, sizeof(*vlan), end)) goto truncated;
        proto = vlan->encapsulated_proto;
        l3 = vlan + 1;
    }
    struct lvs_address_key destination, source;
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = l3;
        if (!LVS_FITS(ip, sizeof(*ip), end)) goto truncated;
        lvs_key4(&destination, ip->daddr);
        lvs_key4(&source, ip->saddr);
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = l3;
        if (!LVS_FITS(ip6, sizeof(*ip6), end)) goto truncated;
        lvs_key6(&destination, &ip6->daddr);
        lvs_key6(&source, &ip6->saddr);
    } else {
        goto pass;
    }
    if (!lvs_is_ours(&destination, &source)) goto pass;
    // A queue without a socket passes the frame (the flags' XDP_PASS).
    int verdict = bpf_redirect_map(&lvsd_sockets, ctx->rx_queue_index, XDP_PASS);
    LVS_COUNT(lvsd_xdp_counters, verdict == XDP_REDIRECT ? LVS_XDP_REDIRECTED : LVS_XDP_NO_SOCKET);
    return verdict;
truncated:
    LVS_COUNT(lvsd_xdp_counters, LVS_XDP_TRUNCATED);
    return XDP_PASS;
pass:
    LVS_COUNT(lvsd_xdp_counters, LVS_XDP_PASSED);
    return XDP_PASS;
}
