// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// lvsd's XDP program (--io xdp): every frame that is lvsd's goes to the
// AF_XDP socket of the queue it came in on; the rest passes to the kernel,
// where lvsd's AF_PACKET ring still sees it (ARP, neighbour discovery).
// lvsd's: to an owned address (a VIP or a FULLNAT local address), or, unless
// it is to one of the host's own addresses (a health check's answer), from
// a NAT real server, whose reply lvsd rewrites.
// With several workers, a frame whose connection another worker owns (the
// steering of lvs_steering.h) passes too, and that worker's AF_PACKET ring,
// steered by the same rule, takes it: an AF_XDP socket only ever receives
// from its own queue, and the NIC, not lvsd, picks a frame's queue.
#include "lvs_steering.h"

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

/// The workers' steering (LVS_FANOUT_* slots); queue q's socket is worker q mod workers'.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, LVS_FANOUT_SETTINGS);
    __type(key, __u32);
    __type(value, __u32);
} lvsd_xdp_settings SEC(".maps");

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
    struct lvs_endpoints e;
    void *l4;
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = l3;
        if (!LVS_FITS(ip, sizeof(*ip), end)) goto truncated;
        lvs_key4(&e.destination, ip->daddr);
        lvs_key4(&e.source, ip->saddr);
        e.protocol = ip->protocol;
        // Fragments are steered by their addresses alone, as the fanout program steers them.
        if (ip->frag_off & bpf_htons(0x3fff)) e.protocol = 0;
        e.v6 = 0;
        l4 = l3 + ip->ihl * 4;
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = l3;
        if (!LVS_FITS(ip6, sizeof(*ip6), end)) goto truncated;
        lvs_key6(&e.destination, &ip6->daddr);
        lvs_key6(&e.source, &ip6->saddr);
        e.protocol = ip6->nexthdr;
        e.v6 = 1;
        l4 = ip6 + 1;
    } else {
        goto pass;
    }
    if (!lvs_is_ours(&e.destination, &e.source)) goto pass;
    struct lvs_steering steering;
    lvs_steering_read(&lvsd_xdp_settings, &steering);
    if (steering.workers > 1) {
        // ICMP (an error is steered as the frame it quotes) is left to the fanout program.
        if (e.protocol == IPPROTO_ICMP || e.protocol == IPPROTO_ICMPV6) goto other_worker;
        e.source_port = e.destination_port = 0;
        if (lvs_has_ports(e.protocol)) {
            __be16 *ports = l4;
            if (!LVS_FITS(ports, 4, end)) goto truncated;
            e.source_port = ports[0];
            e.destination_port = ports[1];
        }
        if (lvs_owner(&e, lvs_flags(&e.destination), &steering) != ctx->rx_queue_index % steering.workers) goto other_worker;
    }
    // A queue without a socket passes the frame (the flags' XDP_PASS).
    int verdict = bpf_redirect_map(&lvsd_sockets, ctx->rx_queue_index, XDP_PASS);
    LVS_COUNT(lvsd_xdp_counters, verdict == XDP_REDIRECT ? LVS_XDP_REDIRECTED : LVS_XDP_NO_SOCKET);
    return verdict;
other_worker:
    LVS_COUNT(lvsd_xdp_counters, LVS_XDP_OTHER_WORKER);
    return XDP_PASS;
truncated:
    LVS_COUNT(lvsd_xdp_counters, LVS_XDP_TRUNCATED);
    return XDP_PASS;
pass:
    LVS_COUNT(lvsd_xdp_counters, LVS_XDP_PASSED);
    return XDP_PASS;
}
