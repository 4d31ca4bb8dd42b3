// What Swift cannot import from Glibc: declarations behind _GNU_SOURCE and
// kernel headers (AF_PACKET rings, sendmmsg, TUN's ioctl, libbpf and libxdp). The
// header stays free of system includes (which would clash with Glibc's
// module); the bodies are in shim.c.
#ifndef CLVSLINUX_H
#define CLVSLINUX_H

#include <stddef.h>

/// An AF_PACKET socket bound to one interface with a TPACKET_V2 receive
/// ring of 2 KiB frames: each frame is the user's as soon as it lands
/// (TPACKET_V3 holds a partly filled block back until its retire timer,
/// a millisecond or more of latency for every packet of a quiet flow).
/// Userspace takes runs of ready frames and gives them back.
typedef struct lvs_ring {
    int fd;
    void *map;
    size_t map_length;
    unsigned frame_count;
    unsigned current;
    /// Frames of the run `lvs_ring_block` handed out, until `lvs_ring_release`.
    unsigned taken;
    /// Each frame has its virtio-net header before it (PACKET_VNET_HDR), and
    /// one that did not fit a slot waits whole on the socket (`lvs_ring_copy`).
    int vnet;
    /// A socket that sends GSO super-frames through the qdisc (-1 if none):
    /// the ring's own socket bypasses it, and a bypassing send drops every
    /// frame the device cannot take as it is (one needing software GSO or a
    /// software checksum, as on a NIC with TSO or checksumming turned off).
    int gso_fd;
    /// The socket frames are sent on: the ring's own when it takes every
    /// protocol; otherwise one bound to none, so that the kernel reads each
    /// frame's protocol from its Ethernet header rather than taking the ring's.
    int send_fd;
} lvs_ring;

/// Opens the ring on `ifindex` (0 or -errno) for frames of `protocol`
/// (host order): ETH_P_ALL sees every frame before tc ingress, one
/// protocol sees its frames after it. `fanout_group` > 0 joins a
/// fanout group so that several workers share the interface: steered by the
/// socket filter program `steering` (PACKET_FANOUT_EBPF; the rings' order
/// of joining is the program's numbering), or by the kernel's flow hash
/// (PACKET_FANOUT_HASH) when `steering` is -1.
int lvs_ring_open(lvs_ring *ring, int ifindex, int protocol, unsigned block_size, unsigned block_count, int fanout_group, int steering);
/// A non-blocking AF_PACKET socket on `ifindex` that receives ARP replies
/// and IPv6 neighbour advertisements only (a classic BPF filter): how a
/// worker that the steering does not give them learns next hops. fd or -errno.
int lvs_neighbour_socket(int ifindex);
/// One frame from a packet socket, without waiting: its length (more than
/// `capacity`: cut short), or -errno (-EAGAIN: none).
long lvs_receive_frame(int fd, unsigned char *buffer, size_t capacity);
void lvs_ring_close(lvs_ring *ring);
/// The first of the ready frames from the current position (at most 64, not
/// wrapping), or NULL; `count` frames in the run.
void *lvs_ring_block(lvs_ring *ring, unsigned *count);
/// A frame's bytes (from the Ethernet header), the length in the slot, its
/// length on the wire and its status (TP_STATUS_*); `next` is the frame after it.
const unsigned char *lvs_ring_frame(void *frame, unsigned *length, unsigned *wire_length, unsigned *status, void **next);
/// When the kernel received the frame of the run at `index`, in nanoseconds
/// of CLOCK_REALTIME (its skb timestamp): one clock for every socket on the host.
unsigned long long lvs_ring_frame_time(lvs_ring *ring, unsigned index);
#define LVS_TP_STATUS_COPY (1 << 1)
/// Set by lvs_ring_frame on a frame this host sent (PACKET_OUTGOING).
#define LVS_TP_STATUS_OUTGOING (1u << 31)
/// The whole of the next frame marked TP_STATUS_COPY (with its virtio-net
/// header first): its length (more than `capacity`: cut short), or -errno.
long lvs_ring_copy(lvs_ring *ring, unsigned char *buffer, size_t capacity);
/// Drops the whole copy of a TP_STATUS_COPY frame from the socket, unread.
void lvs_ring_discard(lvs_ring *r);
/// Gives the run back to the kernel.
void lvs_ring_release(lvs_ring *ring);
/// Waits until one of `fds` is readable or `timeout_ms` passes (poll).
int lvs_wait_readable(const int *fds, unsigned count, int timeout_ms);
/// Sends `count` frames with one sendmmsg (after an empty virtio-net header
/// each when `vnet`); returns how many went, or -errno.
int lvs_send_frames(int fd, int vnet, const unsigned char *const *frames, const unsigned *lengths, unsigned count);
/// Sends one frame after the virtio-net header given (`LVS_VNET_HDR_SIZE`
/// bytes: a GSO super-frame for the kernel to cut) on a socket with
/// PACKET_VNET_HDR; returns 0, or -errno.
int lvs_send_offloaded(int fd, const unsigned char *header, const unsigned char *frame, unsigned length);
/// Dropped frames since the last call (PACKET_STATISTICS).
unsigned lvs_ring_drops(lvs_ring *ring);

/// A plain AF_PACKET socket for every protocol, bound to `ifindex` (0: all); the fd or -errno.
int lvs_packet_socket(int ifindex);

/// Opens a TUN device (IFF_TUN | IFF_NO_PI) named `name`; the fd or -errno.
int lvs_tun_open(const char *name);

// MARK: BPF programs and AF_XDP (xdp.c; the programs are in bpf/)

#include "lvs_bpf_abi.h"

/// lvs-realserver's TOA programs (bpf/lvs_toa.bpf.c).
typedef struct lvs_toa_programs lvs_toa_programs;
/// Loads them, attached to nothing (the parser test runs). NULL with the reason in `error`.
lvs_toa_programs *lvs_toa_load(char *error, size_t capacity);
/// Loads them and attaches them, through BPF links, to the cgroup v2
/// directory `cgroup_path`: its sockets (and its descendants') then answer
/// getpeername and accept with the client TOA carried.
lvs_toa_programs *lvs_toa_attach(const char *cgroup_path, char *error, size_t capacity);
void lvs_toa_close(lvs_toa_programs *t);
/// The client of the connection with this peer the programs saw established (0, or -errno: -ENOENT for none).
int lvs_toa_lookup(lvs_toa_programs *t, const struct lvs_toa_peer *peer, struct lvs_toa_client *client);
/// The programs' counters (LVS_TOA_*), summed over CPUs.
int lvs_toa_counters(lvs_toa_programs *t, unsigned long long *totals, unsigned count);
/// Runs the option parser on `frame` (BPF_PROG_TEST_RUN): `found` is 8 or 20
/// (the client in `client`), 0 for none, -1 for malformed.
int lvs_toa_test_run(lvs_toa_programs *t, const unsigned char *frame, unsigned length, int *found, struct lvs_toa_client *client);

#define LVS_XDP_MODE_NATIVE 1
#define LVS_XDP_MODE_GENERIC 2
#define LVS_MODE_TC 3

/// A hash map of addresses (16 bytes; IPv4 as ::ffff:a.b.c.d) to flags,
/// which every interface's program reads: its fd or -errno.
int lvs_xdp_address_map(unsigned capacity);
/// Sets an address's flags (0 removes it): 0 or -errno.
int lvs_xdp_address_set(int map, const unsigned char *address16, unsigned flags);

typedef struct lvs_xdp_program lvs_xdp_program;
/// lvsd's XDP program, loaded with `address_map` as its addresses and a
/// socket slot per queue, not attached (tests run it with lvs_bpf_test_run).
lvs_xdp_program *lvs_xdp_load(int address_map, unsigned queues, char *error, size_t capacity);
/// The same, attached to `ifindex`: natively where the driver can, in
/// generic mode where not (`mode`). NULL on failure, with the reason in
/// `error`; on a generic attach `error` says why native failed.
lvs_xdp_program *lvs_xdp_attach(int ifindex, int address_map, unsigned queues, int *mode, char *error, size_t capacity);
/// lvs-realserver's decapsulator, for tc ingress (`tc`) or XDP, with the
/// address map `vips` and GUE (variant 0) on `gue_port` unless 0; not attached.
lvs_xdp_program *lvs_decapsulator_load(int vips, unsigned short gue_port, int tc, char *error, size_t capacity);
/// The same, attached to `ifindex`: at tc ingress (tcx; mode LVS_MODE_TC)
/// or in XDP as lvs_xdp_attach attaches.
lvs_xdp_program *lvs_decapsulator_attach(int ifindex, int vips, unsigned short gue_port, int tc, int *mode, char *error, size_t capacity);
/// lvsd's steering program for PACKET_FANOUT_EBPF (a socket filter), with
/// the address map `address_map` (LVS_XDP_OWNED, LVS_FANOUT_LOCAL); not attached.
lvs_xdp_program *lvs_fanout_load(int address_map, char *error, size_t capacity);
/// lvsd's kernel forwarding (bpf/lvsd_forward.bpf.c): its tc program
/// loaded, its map of `flows` connection
/// directions, and its `slots` counts mapped read-only into memory. NULL
/// with the reason in `error`.
typedef struct lvs_forward lvs_forward;
#define LVS_FORWARD_INTERFACES 64
lvs_forward *lvs_forward_open(unsigned flows, unsigned slots, char *error, size_t capacity);
/// Detaches from every interface and unloads.
void lvs_forward_close(lvs_forward *forward);
/// Attaches the tc program at `ifindex`'s ingress (tcx): 0 or -errno.
int lvs_forward_attach(lvs_forward *forward, int ifindex);
/// The counts, one per slot; valid until lvs_forward_close.
const struct lvs_forward_count *lvs_forward_counts(lvs_forward *forward);
/// Sets (`flow` not NULL) or removes a direction of a connection: 0 or -errno.
int lvs_forward_set(lvs_forward *forward, const struct lvs_forward_key *key, const struct lvs_forward_flow *flow);
/// Frames the tc program forwarded, over the CPUs: 0 or -errno.
int lvs_forward_forwarded(lvs_forward *forward, unsigned long long *total);
/// Runs the tc program once over `frame`, as lvs_bpf_test_run.
int lvs_forward_test_run(lvs_forward *forward, const unsigned char *frame, unsigned length, unsigned char *out, unsigned *out_length,
                         unsigned *verdict);
/// A loaded program's descriptor, for PACKET_FANOUT_DATA.
int lvs_bpf_program_fd(lvs_xdp_program *program);
/// Sets one slot of a program's configuration array: 0 or -errno.
int lvs_bpf_setting(lvs_xdp_program *program, unsigned slot, unsigned value);
/// Detaches (when attached) and unloads.
void lvs_xdp_detach(lvs_xdp_program *program);
/// A program's counters summed over the CPUs, `count` slots: 0 or -errno.
int lvs_bpf_counters(lvs_xdp_program *program, unsigned long long *totals, unsigned count);
/// Runs the program once over `frame` (BPF_PROG_TEST_RUN): the frame it
/// leaves (at most `*out_length` bytes) and its verdict. 0 or -errno.
int lvs_bpf_test_run(lvs_xdp_program *program, const unsigned char *frame, unsigned length, unsigned char *out, unsigned *out_length,
                     unsigned *verdict);

/// An AF_XDP socket on one queue with its own UMEM (2048 receive and 2048
/// transmit frames of 2 KiB); frames are copied out on receive and in on
/// send, as with the AF_PACKET ring. NULL with -errno in `error`.
typedef struct lvs_xsk lvs_xsk;
lvs_xsk *lvs_xsk_open(lvs_xdp_program *program, const char *ifname, unsigned queue, int *error);
void lvs_xsk_close(lvs_xsk *socket);
int lvs_xsk_fd(lvs_xsk *socket);
/// Up to `max` received frames (pointers into the UMEM), valid until lvs_xsk_release.
unsigned lvs_xsk_receive(lvs_xsk *socket, const unsigned char **frames, unsigned *lengths, unsigned max);
/// Gives the frames of the last receive back to the kernel.
void lvs_xsk_release(lvs_xsk *socket);
/// Copies `count` frames into transmit frames and sends them; how many went.
int lvs_xsk_send(lvs_xsk *socket, const unsigned char *const *frames, const unsigned *lengths, unsigned count);

#endif
