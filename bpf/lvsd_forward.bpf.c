// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// lvsd's kernel forwarding (--kernel-forwarding): the frames of a connection
// lvsd has established and handed down (NAT and DR, IPv4, TCP and UDP) are
// rewritten and redirected at tc ingress, as lvsd's fast path would have
// done, without a copy to userspace and back; a super-frame stays whole.
// lvsd's rings are then bound to their protocols rather than to every
// frame, which puts them after tc: a frame this program redirects never
// reaches them, and no second lookup is needed to keep it off them.
// Whatever changes a connection's state (SYN, FIN, RST) and whatever the
// fast path would not take (options, fragments, TTL 1, a bad header
// checksum) goes on, to lvsd.
#include "lvs_bpf.h"
#include <linux/pkt_cls.h>
#include <linux/tcp.h>

/// The connections lvsd handed down, one entry per direction; shared by
/// every interface's program (sized by lvsd).
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __uint(max_entries, 1);
    __type(key, struct lvs_forward_key);
    __type(value, struct lvs_forward_flow);
} lvsd_forward_flows SEC(".maps");

/// Each direction's counts, by its `slot` (sized and mapped by lvsd).
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct lvs_forward_count);
} lvsd_forward_counts SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, LVS_FORWARD_COUNTERS);
    __type(key, __u32);
    __type(value, __u64);
} lvsd_forward_counters SEC(".maps");

/// TCP's flag byte: FIN, SYN and RST move the state machine.
#define LVS_TCP_STATE_FLAGS 0x07

/// Ethernet, IPv4 without options and TCP's fixed header: what the program
/// reads and writes, in the linear part of the frame.
#define LVS_FORWARD_HEADERS 54

/// The frame's first 38 bytes as they leave (MACs to ports), written with
/// one call; the IPv4 header starts 4-byte aligned.
struct lvs_forward_rewrite {
    __u16 pad;
    struct ethhdr eth;
    struct iphdr ip;
    __be16 ports[2];
};

/// A one's complement sum folded to 16 bits.
static __always_inline __u32 lvs_fold(__u32 sum) {
    sum = (sum & 0xffff) + (sum >> 16);
    return (sum & 0xffff) + (sum >> 16);
}

/// What replacing a field changes in a one's complement sum (csum_diff's
/// result, in memory order as the packet holds it).
static __always_inline __u32 lvs_diff32(__be32 from, __be32 to) { return (~from & 0xffff) + (~from >> 16) + (to & 0xffff) + (to >> 16); }
static __always_inline __u32 lvs_diff16(__u16 from, __u16 to) { return (~from & 0xffff) + to; }

SEC("tc")
int lvsd_forward(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP)) return TC_ACT_OK;
    if (data + LVS_FORWARD_HEADERS > data_end) {
        // Headers outside the linear part (a packet socket's zero-copy
        // frame) are pulled in, as the kernel's forwarding would.
        __u32 want = skb->len < LVS_FORWARD_HEADERS ? skb->len : LVS_FORWARD_HEADERS;
        if (bpf_skb_pull_data(skb, want) < 0) return TC_ACT_OK;
        data = (void *)(long)skb->data;
        data_end = (void *)(long)skb->data_end;
    }
    struct iphdr *ip = data + sizeof(struct ethhdr);
    __be16 *ports = (void *)(ip + 1);
    if ((void *)(ports + 2) > data_end) return TC_ACT_OK;
    if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)) || ip->ttl <= 1) return TC_ACT_OK;
    // The header checksum is not checked before tc (ip_rcv comes later).
    __u16 *words = (__u16 *)ip;
    __u32 sum = 0;
#pragma unroll
    for (int i = 0; i < 10; i++) sum += words[i];
    if (lvs_fold(sum) != 0xffff) return TC_ACT_OK;
    int tcp = ip->protocol == IPPROTO_TCP;
    __u32 headers;
    if (tcp) {
        // Up to the checksum, so that a segment cut short is not half rewritten.
        __u8 *t = (void *)ip + sizeof(struct iphdr);
        if (data + LVS_FORWARD_HEADERS > data_end || (t[13] & LVS_TCP_STATE_FLAGS)) return TC_ACT_OK;
        headers = sizeof(struct iphdr) + (t[12] >> 4) * 4;
    } else if (ip->protocol == IPPROTO_UDP) {
        if (data + sizeof(struct ethhdr) + sizeof(struct iphdr) + 8 > data_end) return TC_ACT_OK;
        headers = sizeof(struct iphdr) + 8;
    } else {
        return TC_ACT_OK;
    }
    struct lvs_forward_key key = {
        .source = ip->saddr,
        .destination = ip->daddr,
        .source_port = ports[0],
        .destination_port = ports[1],
        .protocol = ip->protocol,
    };
    struct lvs_forward_flow *flow = bpf_map_lookup_elem(&lvsd_forward_flows, &key);
    if (!flow) return TC_ACT_OK;

    struct lvs_forward_rewrite r;
    __builtin_memcpy(&r.eth, flow->macs, 12);
    r.eth.h_proto = bpf_htons(ETH_P_IP);
    r.ip = *ip;
    r.ip.saddr = flow->source;
    r.ip.daddr = flow->destination;
    r.ip.ttl -= 1;
    r.ports[0] = flow->source_port;
    r.ports[1] = flow->destination_port;
    __u32 addresses = ip->saddr == flow->source && ip->daddr == flow->destination
                          ? 0
                          : lvs_diff32(ip->saddr, flow->source) + lvs_diff32(ip->daddr, flow->destination);
    __u32 moved = ports[0] == flow->source_port && ports[1] == flow->destination_port
                      ? 0
                      : lvs_diff16(ports[0], flow->source_port) + lvs_diff16(ports[1], flow->destination_port);
    // TTL and protocol share a 16-bit word; TTL > 1, so it drops by one without a borrow.
    __u16 ttl_word = *(__u16 *)&ip->ttl;
    __u16 ttl_less = *(__u16 *)&r.ip.ttl;
    r.ip.check = ~lvs_fold((~ip->check & 0xffff) + addresses + lvs_diff16(ttl_word, ttl_less));
    // Counted as the segments the wire carries: each repeats the headers.
    __u32 segments = skb->gso_segs > 1 ? skb->gso_segs : 1;
    __u64 bytes = (__u64)(skb->len - sizeof(struct ethhdr)) + (__u64)(segments - 1) * headers;
    __u32 ifindex = flow->ifindex;
    __u32 slot = flow->slot;
    // Nothing is written when this fails, and lvsd takes the frame as it came.
    if (bpf_skb_store_bytes(skb, 0, &r.eth, sizeof(r) - sizeof(r.pad), 0) < 0) return TC_ACT_OK;
    // The transport checksum through the helper, which alone knows a
    // partial checksum (only the pseudo-header's part follows) from a full one.
    __u32 at = tcp ? 50 : 40;
    // A UDP datagram without a checksum keeps none; one that sums to 0 is sent as 0xffff.
    __u64 flags = tcp ? 0 : BPF_F_MARK_MANGLED_0;
    if (addresses) bpf_l4_csum_replace(skb, at, 0, addresses, flags | BPF_F_PSEUDO_HDR);
    if (moved) bpf_l4_csum_replace(skb, at, 0, moved, flags);
    struct lvs_forward_count *count = bpf_map_lookup_elem(&lvsd_forward_counts, &slot);
    if (count) {
        __sync_fetch_and_add(&count->packets, segments);
        __sync_fetch_and_add(&count->bytes, bytes);
    }
    LVS_COUNT(lvsd_forward_counters, LVS_FORWARD_FORWARDED);
    return bpf_redirect(ifindex, 0);
}
