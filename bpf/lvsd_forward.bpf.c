// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// lvsd's kernel forwarding (--kernel-forwarding): the frames of a connection
// lvsd has established and handed down (NAT and DR, IPv4, TCP and UDP) are
// rewritten and redirected at tc ingress, as lvsd's fast path would have
// done, without a copy to userspace and back; a super-frame stays whole.
// Two programs decide by one function: the tc program forwards the frames
// it finds, and the filter on lvsd's AF_PACKET rings, which see each frame
// before tc does, leaves the same frames out. Whatever changes a
// connection's state (SYN, FIN, RST) and whatever the fast path would not
// take (options, fragments, TTL 1, a bad header checksum) goes to lvsd.
#include "lvs_bpf.h"
#include <linux/pkt_cls.h>
#include <linux/tcp.h>

/// The connections lvsd handed down, one entry per direction; shared by
/// every interface's program and the rings' filter (sized by lvsd).
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

/// The headers of a frame the kernel may forward.
struct lvs_forward_frame {
    struct iphdr ip;
    __be16 ports[2];
    /// TCP: data offset (high nibble) and flags; UDP: the checksum, read
    /// only so that a datagram cut short before it is not rewritten.
    __u8 tcp_offset;
    __u8 tcp_flags;
    __be16 udp_checksum;
};

/// The entry of a frame (from its Ethernet header) that the kernel
/// forwards, or NULL: lvsd takes it. The same for the tc program and the
/// rings' filter, so that each frame goes one way.
static __always_inline struct lvs_forward_flow *lvs_forward_find(struct __sk_buff *skb, struct lvs_forward_frame *f) {
    __be16 proto;
    if (bpf_skb_load_bytes(skb, 12, &proto, 2) < 0 || proto != bpf_htons(ETH_P_IP)) return NULL;
    if (bpf_skb_load_bytes(skb, 14, &f->ip, sizeof(f->ip)) < 0) return NULL;
    if (f->ip.version != 4 || f->ip.ihl != 5 || (f->ip.frag_off & bpf_htons(0x3fff)) || f->ip.ttl <= 1) return NULL;
    // The header checksum is not checked before tc (ip_rcv comes later).
    __u16 words[10];
    __builtin_memcpy(words, &f->ip, sizeof(words));
    __u32 sum = 0;
#pragma unroll
    for (int i = 0; i < 10; i++) sum += words[i];
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    if (sum != 0xffff) return NULL;
    if (bpf_skb_load_bytes(skb, 34, f->ports, 4) < 0) return NULL;
    if (f->ip.protocol == IPPROTO_TCP) {
        if (bpf_skb_load_bytes(skb, 46, &f->tcp_offset, 2) < 0 || (f->tcp_flags & LVS_TCP_STATE_FLAGS)) return NULL;
    } else if (f->ip.protocol == IPPROTO_UDP) {
        if (bpf_skb_load_bytes(skb, 40, &f->udp_checksum, 2) < 0) return NULL;
    } else {
        return NULL;
    }
    struct lvs_forward_key key = {
        .source = f->ip.saddr,
        .destination = f->ip.daddr,
        .source_port = f->ports[0],
        .destination_port = f->ports[1],
        .protocol = f->ip.protocol,
    };
    return bpf_map_lookup_elem(&lvsd_forward_flows, &key);
}

/// One 4-byte field of the IPv4 header rewritten, both checksums following.
static __always_inline void lvs_rewrite_address(struct __sk_buff *skb, __u32 at, __be32 old, __be32 new, __u32 l4_checksum, __u64 l4_flags) {
    if (old == new) return;
    bpf_l4_csum_replace(skb, l4_checksum, old, new, l4_flags | BPF_F_PSEUDO_HDR | 4);
    bpf_l3_csum_replace(skb, 24, old, new, 4);
    bpf_skb_store_bytes(skb, at, &new, 4, 0);
}

static __always_inline void lvs_rewrite_port(struct __sk_buff *skb, __u32 at, __be16 old, __be16 new, __u32 l4_checksum, __u64 l4_flags) {
    if (old == new) return;
    bpf_l4_csum_replace(skb, l4_checksum, old, new, l4_flags | 2);
    bpf_skb_store_bytes(skb, at, &new, 2, 0);
}

SEC("tc")
int lvsd_forward(struct __sk_buff *skb) {
    struct lvs_forward_frame f;
    struct lvs_forward_flow *flow = lvs_forward_find(skb, &f);
    if (!flow) return TC_ACT_OK;
    int tcp = f.ip.protocol == IPPROTO_TCP;
    __u32 checksum = tcp ? 50 : 40;
    // A UDP datagram without a checksum keeps none; one that sums to 0 is sent as 0xffff.
    __u64 l4_flags = tcp ? 0 : BPF_F_MARK_MANGLED_0;
    lvs_rewrite_address(skb, 26, f.ip.saddr, flow->source, checksum, l4_flags);
    lvs_rewrite_address(skb, 30, f.ip.daddr, flow->destination, checksum, l4_flags);
    lvs_rewrite_port(skb, 34, f.ports[0], flow->source_port, checksum, l4_flags);
    lvs_rewrite_port(skb, 36, f.ports[1], flow->destination_port, checksum, l4_flags);
    // TTL and protocol share a 16-bit word of the header checksum.
    __be16 old_word = bpf_htons((__u16)f.ip.ttl << 8 | f.ip.protocol);
    __be16 new_word = bpf_htons((__u16)(f.ip.ttl - 1) << 8 | f.ip.protocol);
    __u8 ttl = f.ip.ttl - 1;
    bpf_l3_csum_replace(skb, 24, old_word, new_word, 2);
    bpf_skb_store_bytes(skb, 22, &ttl, 1, 0);
    bpf_skb_store_bytes(skb, 0, flow->macs, 12, 0);
    // Counted as the segments the wire carries: each repeats the headers.
    __u32 segments = skb->gso_segs > 1 ? skb->gso_segs : 1;
    __u32 headers = 20 + (tcp ? (f.tcp_offset >> 4) * 4 : 8);
    __u32 slot = flow->slot;
    struct lvs_forward_count *count = bpf_map_lookup_elem(&lvsd_forward_counts, &slot);
    if (count) {
        __sync_fetch_and_add(&count->packets, segments);
        __sync_fetch_and_add(&count->bytes, (__u64)(skb->len - 14) + (__u64)(segments - 1) * headers);
    }
    LVS_COUNT(lvsd_forward_counters, LVS_FORWARD_FORWARDED);
    return bpf_redirect(flow->ifindex, 0);
}

/// On lvsd's AF_PACKET rings: the frames the tc program forwards are not
/// lvsd's. A packet socket's filter sees the frame from its Ethernet header.
SEC("socket")
int lvsd_forward_filter(struct __sk_buff *skb) {
    struct lvs_forward_frame f;
    return lvs_forward_find(skb, &f) ? 0 : -1;
}
