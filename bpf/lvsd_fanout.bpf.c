// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// lvsd's steering program (PACKET_FANOUT_EBPF): picks, for every frame an
// interface receives, the worker whose AF_PACKET ring gets it, so that both
// directions of a connection reach the worker that owns it (lvs_steering.h
// says how). An ICMP error is steered as the frame it quotes, seen from the
// other side. What is not IP (ARP) and neighbour discovery go to worker 0,
// which answers for the owned addresses.
#include "lvs_steering.h"

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 16384);
    __type(key, struct lvs_address_key);
    __type(value, __u32);
} lvsd_fanout_addresses SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, LVS_FANOUT_SETTINGS);
    __type(key, __u32);
    __type(value, __u32);
} lvsd_fanout_settings SEC(".maps");

/// Reads the IP header at `offset` from the network header (and the ports
/// after it): 0, or -1 when it is not there or has no ports to read.
static __always_inline int lvs_read(struct __sk_buff *skb, __u32 offset, int v6, struct lvs_endpoints *e) {
    __u32 l4;
    if (v6) {
        struct ipv6hdr ip6;
        if (bpf_skb_load_bytes_relative(skb, offset, &ip6, sizeof(ip6), BPF_HDR_START_NET) < 0) return -1;
        lvs_key6(&e->source, &ip6.saddr);
        lvs_key6(&e->destination, &ip6.daddr);
        e->protocol = ip6.nexthdr;
        l4 = offset + sizeof(ip6);
    } else {
        struct iphdr ip;
        if (bpf_skb_load_bytes_relative(skb, offset, &ip, sizeof(ip), BPF_HDR_START_NET) < 0) return -1;
        lvs_key4(&e->source, ip.saddr);
        lvs_key4(&e->destination, ip.daddr);
        e->protocol = ip.protocol;
        // A later fragment has no ports: steered by the addresses alone, as every fragment is.
        if (ip.frag_off & bpf_htons(0x3fff)) e->protocol = 0;
        l4 = offset + ip.ihl * 4;
    }
    e->v6 = v6;
    e->source_port = e->destination_port = 0;
    if (lvs_has_ports(e->protocol) || e->protocol == IPPROTO_ICMP || e->protocol == IPPROTO_ICMPV6) {
        __be16 ports[2];
        if (bpf_skb_load_bytes_relative(skb, l4, ports, sizeof(ports), BPF_HDR_START_NET) < 0) return -1;
        if (e->protocol == IPPROTO_ICMP || e->protocol == IPPROTO_ICMPV6) {
            // The type and code: not ports, but what says whether a frame is quoted.
            e->source_port = ports[0];
            return (int)l4;
        }
        e->source_port = ports[0];
        e->destination_port = ports[1];
    }
    return (int)l4;
}

static __always_inline __u32 lvs_worker(struct lvs_endpoints *e, const struct lvs_steering *s) {
    __u32 *flags = bpf_map_lookup_elem(&lvsd_fanout_addresses, &e->destination);
    return lvs_owner(e, flags ? *flags : 0, s);
}

SEC("socket")
int lvsd_fanout(struct __sk_buff *skb) {
    struct lvs_steering s;
    lvs_steering_read(&lvsd_fanout_settings, &s);
    if (s.workers <= 1) return 0;
    int v6;
    if (skb->protocol == bpf_htons(ETH_P_IP)) {
        v6 = 0;
    } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
        v6 = 1;
    } else {
        return 0;
    }
    struct lvs_endpoints e;
    int l4 = lvs_read(skb, 0, v6, &e);
    if (l4 < 0) return 0;
    __u8 type = bpf_ntohs(e.source_port) >> 8;
    if (e.protocol == IPPROTO_ICMPV6 && type >= 133 && type <= 137) return 0;
    int error = (e.protocol == IPPROTO_ICMP && (type == 3 || type == 11 || type == 12)) ||
                (e.protocol == IPPROTO_ICMPV6 && type >= 1 && type <= 4);
    if (!error) return lvs_worker(&e, &s);
    // The quoted frame went the other way: its source is where this one goes.
    struct lvs_endpoints quoted;
    if (lvs_read(skb, l4 + 8, v6, &quoted) < 0) return 0;
    struct lvs_endpoints turned = {
        .source = quoted.destination,
        .destination = quoted.source,
        .source_port = quoted.destination_port,
        .destination_port = quoted.source_port,
        .protocol = quoted.protocol,
        .v6 = v6,
    };
    return lvs_worker(&turned, &s);
}
