// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// lvs-realserver's decapsulator: IPIP, IPv6-in-IPv4, IPv4- and IPv6-in-IPv6
// and GUE variant 0 (on the configured port) lose their outer headers when
// the inner destination is a VIP, and go on into the kernel as if they had
// arrived bare; anything else passes untouched. One source, two programs: at
// tc ingress (tcx) it works on the skb, in XDP on the frame before there is
// one (but veth copies a frame short of XDP's headroom).
#include "lvs_bpf.h"

#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif
/// tcx: go on to the next program, then the stack (linux/bpf.h of 6.6).
#define LVS_TCX_NEXT (-1)

/// The VIPs whose tunnel packets are stripped.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 4096);
    __type(key, struct lvs_address_key);
    __type(value, __u32);
} lvs_decap_vips SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, LVS_DECAP_SETTINGS);
    __type(key, __u32);
    __type(value, __u32);
} lvs_decap_settings SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, LVS_DECAP_COUNTERS);
    __type(key, __u32);
    __type(value, __u64);
} lvs_decap_counters SEC(".maps");

/// A tunnel packet to strip: how many bytes follow the Ethernet header
/// before the inner one, and the inner family.
struct lvs_tunnel {
    __u32 outer;
    __be16 inner_proto;
};

static __always_inline __u16 lvs_gue_port(void) {
    __u32 slot = LVS_DECAP_GUE_PORT;
    __u32 *port = bpf_map_lookup_elem(&lvs_decap_settings, &slot);
    return port ? (__u16)*port : 0;
}

/// Whether the frame in [data, end) is a tunnel packet for a VIP.
static __always_inline int lvs_tunnel_for_vip(void *data, void *end, struct lvs_tunnel *t) {
    struct ethhdr *eth = data;
    if (!LVS_FITS(eth, sizeof(*eth), end)) return 0;
    void *outer = eth + 1;
    __u8 proto;
    __u32 length;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = outer;
        if (!LVS_FITS(ip, sizeof(*ip), end)) return 0;
        // No options, not a fragment (DF is fine).
        if (ip->ihl != 5 || ip->version != 4 || (ip->frag_off & bpf_htons(0x3FFF)) != 0) return 0;
        proto = ip->protocol;
        length = sizeof(*ip);
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = outer;
        if (!LVS_FITS(ip6, sizeof(*ip6), end)) return 0;
        // The tunnel's header next, no extension headers.
        proto = ip6->nexthdr;
        length = sizeof(*ip6);
    } else {
        return 0;
    }
    __u16 gue = lvs_gue_port();
    if (gue && proto == IPPROTO_UDP) {
        // UDP to the GUE port, then the 4-byte GUE header (version 0) and hlen words of options.
        struct udphdr *udp = outer + length;
        __u8 *guehdr = (void *)(udp + 1);
        if (!LVS_FITS(guehdr, 4, end)) return 0;
        if (udp->dest != bpf_htons(gue) || (guehdr[0] >> 6) != 0) return 0;
        proto = guehdr[1];
        length += sizeof(*udp) + 4 + (guehdr[0] & 0x1F) * 4;
    }
    struct lvs_address_key vip;
    void *inner = outer + length;
    if (proto == IPPROTO_IPIP) {
        struct iphdr *ip = inner;
        if (!LVS_FITS(ip, sizeof(*ip), end)) return 0;
        lvs_key4(&vip, ip->daddr);
        t->inner_proto = bpf_htons(ETH_P_IP);
    } else if (proto == IPPROTO_IPV6) {
        struct ipv6hdr *ip6 = inner;
        if (!LVS_FITS(ip6, sizeof(*ip6), end)) return 0;
        lvs_key6(&vip, &ip6->daddr);
        t->inner_proto = bpf_htons(ETH_P_IPV6);
    } else {
        return 0;
    }
    t->outer = length;
    return bpf_map_lookup_elem(&lvs_decap_vips, &vip) != 0;
}

SEC("tc")
int lvs_decap_tc(struct __sk_buff *skb) {
    struct lvs_tunnel t;
    if (!lvs_tunnel_for_vip((void *)(long)skb->data, (void *)(long)skb->data_end, &t)) goto pass;
    // The kernel removes the outer headers (the flag names the inner family); the EtherType follows.
    __u64 flags = t.inner_proto == bpf_htons(ETH_P_IP) ? BPF_F_ADJ_ROOM_DECAP_L3_IPV4 : BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
    if (bpf_skb_adjust_room(skb, -(__s32)t.outer, BPF_ADJ_ROOM_MAC, flags)) goto pass;
    struct ethhdr *eth = (void *)(long)skb->data;
    if (!LVS_FITS(eth, sizeof(*eth), (void *)(long)skb->data_end)) goto pass;
    eth->h_proto = t.inner_proto;
    LVS_COUNT(lvs_decap_counters, LVS_DECAP_STRIPPED);
    return LVS_TCX_NEXT;
pass:
    LVS_COUNT(lvs_decap_counters, LVS_DECAP_PASSED);
    return LVS_TCX_NEXT;
}

SEC("xdp")
int lvs_decap_xdp(struct xdp_md *ctx) {
    struct lvs_tunnel t;
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (!lvs_tunnel_for_vip(data, end, &t)) goto pass;
    // The Ethernet header moves up to the inner header; the frame's head follows it.
    struct ethhdr *eth = data;
    struct ethhdr *moved = data + t.outer;
    if (t.outer > 512 || !LVS_FITS(moved, sizeof(*moved), end) || !LVS_FITS(eth, sizeof(*eth), end)) goto pass;
    __builtin_memcpy(moved->h_dest, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(moved->h_source, eth->h_source, ETH_ALEN);
    moved->h_proto = t.inner_proto;
    if (bpf_xdp_adjust_head(ctx, (int)t.outer)) goto pass;
    LVS_COUNT(lvs_decap_counters, LVS_DECAP_STRIPPED);
    return XDP_PASS;
pass:
    LVS_COUNT(lvs_decap_counters, LVS_DECAP_PASSED);
    return XDP_PASS;
}
