// What lvsd's BPF programs and their loader agree on: map flags, counter
// slots, configuration slots, the TOA maps' entries. Included by the BPF
// sources in bpf/ (built with clang -target bpf) and by the loader; plain
// integers and structs of them only.
#ifndef LVS_BPF_ABI_H
#define LVS_BPF_ABI_H

/// Address-map flags: frames to an owned address (VIP, local address) go to
/// lvsd; frames to a host address stay the kernel's; frames from a real
/// server whose replies lvsd rewrites (NAT) go to lvsd.
#define LVS_XDP_OWNED 1
#define LVS_XDP_REPLY_SOURCE 2
#define LVS_XDP_HOST 4
/// A FULLNAT local address: the steering program picks the worker by the
/// destination port's low bits (each worker's slice of the port space).
#define LVS_FANOUT_LOCAL 8

/// The redirect program's counters (a per-CPU array, one slot each).
enum lvs_xdp_counter {
    /// Frames sent to the queue's AF_XDP socket.
    LVS_XDP_REDIRECTED = 0,
    /// lvsd's frames on a queue without a socket: passed to the kernel.
    LVS_XDP_NO_SOCKET = 1,
    /// Frames to a host address, or not lvsd's at all: passed.
    LVS_XDP_PASSED = 2,
    /// Frames too short for their headers: passed, for the kernel to judge.
    LVS_XDP_TRUNCATED = 3,
    /// lvsd's frames whose connection another worker owns than the queue's:
    /// passed, for that worker's AF_PACKET ring.
    LVS_XDP_OTHER_WORKER = 4,
    LVS_XDP_COUNTERS = 5,
};

/// The decapsulator's configuration (an array map, one slot each).
enum lvs_decap_setting {
    /// The GUE port (host order), 0: no GUE.
    LVS_DECAP_GUE_PORT = 0,
    LVS_DECAP_SETTINGS = 1,
};

/// The decapsulator's counters (a per-CPU array).
enum lvs_decap_counter {
    /// Tunnel packets for a VIP whose outer headers came off.
    LVS_DECAP_STRIPPED = 0,
    /// Packets left as they were (not a tunnel, not a VIP's).
    LVS_DECAP_PASSED = 1,
    LVS_DECAP_COUNTERS = 2,
};

/// The steering program's configuration (an array map, one slot each).
enum lvs_fanout_setting {
    /// How many workers share the interface (0 or 1: all to the first).
    LVS_FANOUT_WORKERS = 0,
    /// The local-port bits that name a FULLNAT connection's worker.
    LVS_FANOUT_PORT_MASK = 1,
    /// When a service is persistent: the length plus one of the client
    /// prefix that is hashed (IPv4, IPv6), without the port; 0: the
    /// client's address and port.
    LVS_FANOUT_PREFIX4 = 2,
    LVS_FANOUT_PREFIX6 = 3,
    LVS_FANOUT_SETTINGS = 4,
};

/// lvsd's kernel forwarding (bpf/lvsd_forward.bpf.c, `--kernel-forwarding`):
/// an IPv4 TCP or UDP frame from `source`:`source_port` to
/// `destination`:`destination_port` (network order, `pad` zero).
struct lvs_forward_key {
    unsigned int source;
    unsigned int destination;
    unsigned short source_port;
    unsigned short destination_port;
    unsigned char protocol;
    unsigned char pad[3];
};

/// What such a frame leaves with: its addresses and ports (network order),
/// its MACs (destination, then source), on interface `ifindex`, the TTL one
/// less; the program counts it in slot `slot` of the counts array.
struct lvs_forward_flow {
    unsigned int source;
    unsigned int destination;
    unsigned short source_port;
    unsigned short destination_port;
    unsigned int ifindex;
    unsigned char macs[12];
    unsigned int slot;
};

/// A direction's packets and IPv4 bytes as on the wire, counted by the
/// program in an array lvsd maps into its memory and reads once a second
/// (no system call) to keep the connection alive and counted.
struct lvs_forward_count {
    unsigned long long packets;
    unsigned long long bytes;
};

/// The forwarding program's counters (a per-CPU array).
enum lvs_forward_counter {
    /// Frames (a super-frame once) forwarded by the program.
    LVS_FORWARD_FORWARDED = 0,
    LVS_FORWARD_COUNTERS = 1,
};

/// lvs-realserver's TOA programs (bpf/lvs_toa.bpf.c): the client a FULLNAT
/// director carried in TCP option 254, kept per socket and per connection.
struct lvs_toa_client {
    /// 4 or 6; 0 for none.
    unsigned char family;
    unsigned char pad;
    /// Network order.
    unsigned short port;
    /// IPv4 in the first 4 bytes.
    unsigned char address[16];
};

/// A connection's peer as the real server's kernel knows it (under FULLNAT,
/// the director's local address and port, one connection each): the
/// address as 16 bytes (IPv4 as ::ffff:a.b.c.d), the port in network order.
struct lvs_toa_peer {
    unsigned char address[16];
    unsigned short port;
    unsigned short pad;
};

/// The TOA programs' per-CPU counters.
enum {
    /// Connections established with a well-formed TOA.
    LVS_TOA_FOUND = 0,
    /// Connections established without one.
    LVS_TOA_NONE = 1,
    /// Connections whose options were malformed or whose TOA had a length
    /// that fits neither family (their peer stays as it is).
    LVS_TOA_MALFORMED = 2,
    /// getpeername and accept answers rewritten to the client.
    LVS_TOA_ANSWERED = 3,
    LVS_TOA_COUNTERS = 4,
};

#endif
