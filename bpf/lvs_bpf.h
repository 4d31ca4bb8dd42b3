// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Shared by lvsd's BPF programs: the headers they read, bounds-checked as
// the verifier wants, and the address key both maps use.
#ifndef LVS_BPF_H
#define LVS_BPF_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "lvs_bpf_abi.h"

// Dual-licensed as the kernel's own BPF samples and Cilium's are: GPL-compatible
// for the verifier's GPL-only helpers, BSD for everyone else.
char LICENSE[] SEC("license") = "Dual BSD/GPL";

/// An 802.1Q tag (linux/if_vlan.h is not a UAPI header).
struct lvs_vlan_hdr {
    __be16 tci;
    __be16 encapsulated_proto;
};

/// 16 bytes in network order; IPv4 as ::ffff:a.b.c.d.
struct lvs_address_key {
    __u8 bytes[16];
};

/// True when `bytes` bytes from `p` lie inside the frame.
#define LVS_FITS(p, bytes, end) ((void *)(p) + (bytes) <= (void *)(end))

static __always_inline void lvs_key4(struct lvs_address_key *k, __be32 address) {
    __builtin_memset(k, 0, sizeof(*k));
    k->bytes[10] = 0xff;
    k->bytes[11] = 0xff;
    __builtin_memcpy(&k->bytes[12], &address, 4);
}

static __always_inline void lvs_key6(struct lvs_address_key *k, const struct in6_addr *address) {
    __builtin_memcpy(k->bytes, address, 16);
}

/// Adds one to slot `slot` of a per-CPU counter array.
#define LVS_COUNT(map, slot)                                  \
    do {                                                      \
        __u32 lvs_slot = (slot);                              \
        __u64 *lvs_value = bpf_map_lookup_elem(&(map), &lvs_slot); \
        if (lvs_value) *lvs_value += 1;                       \
    } while (0)

#endif
