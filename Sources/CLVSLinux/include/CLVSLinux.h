// What Swift cannot import from Glibc: declarations behind _GNU_SOURCE and
// kernel headers (AF_PACKET rings, TPACKET_V3, sendmmsg, netlink). The
// header stays free of system includes (which would clash with Glibc's
// module); the bodies are in shim.c.
#ifndef CLVSLINUX_H
#define CLVSLINUX_H

#include <stddef.h>

/// The user id of a Unix socket's peer (SO_PEERCRED), or -1.
long long lvs_peer_uid(int fd);

/// accept4 with SOCK_CLOEXEC.
int lvs_accept_cloexec(int fd);

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
} lvs_ring;

/// Opens the ring on `ifindex` (0 or -errno). `fanout_group` > 0 joins a
/// PACKET_FANOUT_HASH group so that several workers share the interface.
int lvs_ring_open(lvs_ring *ring, int ifindex, unsigned block_size, unsigned block_count, int fanout_group);
void lvs_ring_close(lvs_ring *ring);
/// The first of the ready frames from the current position (at most 64, not
/// wrapping), or NULL; `count` frames in the run.
void *lvs_ring_block(lvs_ring *ring, unsigned *count);
/// A frame's bytes (from the Ethernet header) and length; `next` is the frame after it.
const unsigned char *lvs_ring_frame(void *frame, unsigned *length, void **next);
/// Gives the run back to the kernel.
void lvs_ring_release(lvs_ring *ring);
/// Waits until the ring has a frame or `timeout_ms` passes (poll).
int lvs_ring_wait(lvs_ring *const *rings, unsigned count, int timeout_ms);
/// Sends `count` frames with one sendmmsg; returns how many went, or -errno.
int lvs_send_frames(int fd, const unsigned char *const *frames, const unsigned *lengths, unsigned count);
/// recvmsg on an IPv6 raw socket with IPV6_RECVHOPLIMIT on: the payload's
/// length (or -errno), its source and the hop limit it arrived with (-1 if absent).
long lvs_recv6(int fd, unsigned char *buffer, size_t capacity, unsigned char *source16, int *hop_limit);
/// Dropped frames since the last call (PACKET_STATISTICS).
unsigned lvs_ring_drops(lvs_ring *ring);

/// One rtnetlink dump (RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE, RTM_GETNEIGH)
/// into `buffer`: the raw messages, or -errno.
long lvs_netlink_dump(unsigned short type, unsigned char family, unsigned char *buffer, size_t capacity);

/// A plain AF_PACKET socket for every protocol, bound to `ifindex` (0: all); the fd or -errno.
int lvs_packet_socket(int ifindex);

/// Opens a TUN device (IFF_TUN | IFF_NO_PI) named `name`; the fd or -errno.
int lvs_tun_open(const char *name);

#endif
