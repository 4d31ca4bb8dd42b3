// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Which worker owns a frame's connection: shared by the workers' fanout
// program (AF_PACKET) and lvsd's XDP program (AF_XDP), so that both give a
// connection's frames to the same worker.
//   to a VIP:                   the client is the source: hash(source)
//   to a FULLNAT local address: the local port names its worker (each
//                               worker allocates the ports whose low bits
//                               are its index): destination port & mask
//   anything else (a NAT real server's reply): the client is the
//                               destination: hash(destination)
// The hash covers the client's address and port, or, when a service is
// persistent, the client's address under the persistence netmask alone, so
// that one client's connections meet one template.
#ifndef LVS_STEERING_H
#define LVS_STEERING_H

#include "lvs_bpf.h"

/// A frame's addresses and ports (0 where it has none: not TCP, UDP or
/// SCTP, or a fragment).
struct lvs_endpoints {
    struct lvs_address_key source, destination;
    __be16 source_port, destination_port;
    __u8 protocol;
    int v6;
};

/// The LVS_FANOUT_* settings, read once per frame.
struct lvs_steering {
    __u32 workers, port_mask, prefix4, prefix6;
};

/// Reads the settings from an array map of LVS_FANOUT_SETTINGS slots.
static __always_inline void lvs_steering_read(void *settings, struct lvs_steering *s) {
    __u32 *value, slot;
    slot = LVS_FANOUT_WORKERS;
    value = bpf_map_lookup_elem(settings, &slot);
    s->workers = value ? *value : 0;
    slot = LVS_FANOUT_PORT_MASK;
    value = bpf_map_lookup_elem(settings, &slot);
    s->port_mask = value ? *value : 0;
    slot = LVS_FANOUT_PREFIX4;
    value = bpf_map_lookup_elem(settings, &slot);
    s->prefix4 = value ? *value : 0;
    slot = LVS_FANOUT_PREFIX6;
    value = bpf_map_lookup_elem(settings, &slot);
    s->prefix6 = value ? *value : 0;
}

/// Keeps the first `prefix` bits of the address (the persistence netmask).
static __always_inline void lvs_mask(struct lvs_address_key *k, __u32 prefix) {
#pragma unroll
    for (int i = 0; i < 16; i++) {
        int bits = (int)prefix - i * 8;
        if (bits >= 8) continue;
        k->bytes[i] &= bits <= 0 ? 0 : (__u8)(0xff << (8 - bits));
    }
}

/// The client's worker: its address (masked) and port, hashed, scaled to the workers.
static __always_inline __u32 lvs_client_worker(struct lvs_address_key *client, __be16 port, int v6, const struct lvs_steering *s) {
    __u32 prefix = v6 ? s->prefix6 : s->prefix4;
    __u32 x = 0;
    if (prefix) {
        // The setting is the netmask's length plus one; an IPv4 netmask counts from the address, inside the mapped key.
        lvs_mask(client, (v6 ? 0 : 96) + prefix - 1);
    } else {
        x = bpf_ntohs(port);
    }
    __u32 words[4];
    __builtin_memcpy(words, client->bytes, 16);
    x ^= words[0] ^ words[1] ^ words[2] ^ words[3];
    // A multiplicative mix, then the top bits scaled to [0, workers).
    x *= 0x9E3779B1u;
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    return (__u32)(((__u64)x * s->workers) >> 32);
}

/// The owner of a frame whose destination has `flags` (LVS_XDP_OWNED, LVS_FANOUT_LOCAL).
static __always_inline __u32 lvs_owner(struct lvs_endpoints *e, __u32 flags, const struct lvs_steering *s) {
    if (flags & LVS_FANOUT_LOCAL) return (bpf_ntohs(e->destination_port) & s->port_mask) % s->workers;
    if (flags & LVS_XDP_OWNED) return lvs_client_worker(&e->source, e->source_port, e->v6, s);
    return lvs_client_worker(&e->destination, e->destination_port, e->v6, s);
}

/// Whether a protocol has the ports the steering reads.
static __always_inline int lvs_has_ports(__u8 protocol) {
    return protocol == IPPROTO_TCP || protocol == IPPROTO_UDP || protocol == IPPROTO_SCTP;
}

#endif
