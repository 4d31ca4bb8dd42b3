#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/filter.h>
#include <net/ethernet.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include "CLVSLinux.h"

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

/* struct virtio_net_hdr: what PACKET_VNET_HDR puts before each frame. */
#define LVS_VNET_HDR_SIZE 10

#define LVS_FRAME_SIZE 2048

/* Newer than this machine's headers (Linux 6.1). */
#define LVS_PACKET_FANOUT_FLAG_IGNORE_OUTGOING 0x4000

int lvs_ring_open(lvs_ring *r, int ifindex, int protocol, unsigned block_size, unsigned block_count, int fanout_group, int steering) {
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    r->gso_fd = -1;
    r->send_fd = -1;
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(protocol));
    if (fd < 0) return -errno;
    int v = TPACKET_V2;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) < 0) goto fail;
    /* Offloads as the kernel left them: each frame comes with its virtio-net
       header (partial checksum, GSO), and a frame larger than a ring slot (a
       TSO or GRO super-frame) is queued whole on the socket, its slot marked
       TP_STATUS_COPY. Without these a kernel would hand over partial
       checksums unmarked and cut super-frames short. */
    int on = 1;
    r->vnet = setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &on, sizeof(on)) == 0;
    if (r->vnet) {
        setsockopt(fd, SOL_PACKET, PACKET_COPY_THRESH, &on, sizeof(on));
        int bytes = 8 << 20;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes)) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
    }
    struct tpacket_req req;
    memset(&req, 0, sizeof(req));
    req.tp_block_size = block_size;
    req.tp_block_nr = block_count;
    req.tp_frame_size = LVS_FRAME_SIZE;
    req.tp_frame_nr = (block_size / LVS_FRAME_SIZE) * block_count;
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) < 0) goto fail;
    size_t length = (size_t)block_size * block_count;
    void *map = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) map = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) goto fail;
    /* Our own transmissions are not input. */
    int one = 1;
    setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof(sll));
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(protocol);
    sll.sll_ifindex = ifindex;
    if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) { munmap(map, length); goto fail; }
    /* Multicast frames (IPv6 neighbour discovery) on NICs that filter them. */
    struct packet_mreq mr;
    memset(&mr, 0, sizeof(mr));
    mr.mr_ifindex = ifindex;
    mr.mr_type = PACKET_MR_ALLMULTI;
    setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr));
    if (fanout_group > 0) {
        /* A fanout group's members share one hook, which PACKET_IGNORE_OUTGOING
           does not reach: the group takes the flag itself (Linux 6.10), and
           lvs_ring_frame marks what still comes (LVS_TP_STATUS_OUTGOING). */
        int arg = (fanout_group & 0xFFFF) | ((steering >= 0 ? PACKET_FANOUT_EBPF : PACKET_FANOUT_HASH) << 16);
        int ignoring = arg | (LVS_PACKET_FANOUT_FLAG_IGNORE_OUTGOING << 16);
        if (setsockopt(fd, SOL_PACKET, PACKET_FANOUT, &ignoring, sizeof(ignoring)) < 0 &&
            setsockopt(fd, SOL_PACKET, PACKET_FANOUT, &arg, sizeof(arg)) < 0) { munmap(map, length); goto fail; }
        if (steering >= 0 && setsockopt(fd, SOL_PACKET, PACKET_FANOUT_DATA, &steering, sizeof(steering)) < 0) { munmap(map, length); goto fail; }
    }
    r->fd = fd;
    r->map = map;
    r->map_length = length;
    r->frame_count = req.tp_frame_nr;
    r->send_fd = fd;
    if (protocol != ETH_P_ALL) {
        int send = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
        struct sockaddr_ll out;
        memset(&out, 0, sizeof(out));
        out.sll_family = AF_PACKET;
        out.sll_ifindex = ifindex;
        if (send < 0 || (r->vnet && setsockopt(send, SOL_PACKET, PACKET_VNET_HDR, &on, sizeof(on)) < 0) ||
            setsockopt(send, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) < 0 || bind(send, (struct sockaddr *)&out, sizeof(out)) < 0) {
            int e = errno;
            if (send >= 0) close(send);
            lvs_ring_close(r);
            return -e;
        }
        r->send_fd = send;
    }
    if (r->vnet) {
        /* Protocol 0: it sends and never receives. */
        int gso = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
        struct sockaddr_ll out;
        memset(&out, 0, sizeof(out));
        out.sll_family = AF_PACKET;
        out.sll_ifindex = ifindex;
        if (gso >= 0 && setsockopt(gso, SOL_PACKET, PACKET_VNET_HDR, &on, sizeof(on)) == 0 && bind(gso, (struct sockaddr *)&out, sizeof(out)) == 0)
            r->gso_fd = gso;
        else if (gso >= 0)
            close(gso);
    }
    return 0;
fail:;
    int e = errno;
    close(fd);
    return -e;
}

int lvs_neighbour_socket(int ifindex) {
    /* ARP replies (operation 2) and IPv6 neighbour advertisements (ICMPv6
       136 right after the fixed header); offsets from the Ethernet header. */
    static struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_ARP, 0, 2),
        BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 20),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 2, 5, 6),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, 0, 5),
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 20),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 58, 0, 3),
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 54),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 136, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 0xFFFF),
        BPF_STMT(BPF_RET | BPF_K, 0),
    };
    struct sock_fprog program = {.len = sizeof(code) / sizeof(code[0]), .filter = code};
    /* Bound only once the filter is on, so that nothing else is queued before it. */
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    int one = 1;
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof(sll));
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = ifindex;
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof(program)) < 0 ||
        setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) < 0 || bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

long lvs_receive_frame(int fd, unsigned char *buffer, size_t capacity) {
    ssize_t n = recv(fd, buffer, capacity, MSG_DONTWAIT | MSG_TRUNC);
    return n < 0 ? -errno : n;
}

void lvs_ring_close(lvs_ring *r) {
    if (r->map) munmap(r->map, r->map_length);
    if (r->fd >= 0) close(r->fd);
    if (r->gso_fd >= 0) close(r->gso_fd);
    if (r->send_fd >= 0 && r->send_fd != r->fd) close(r->send_fd);
    r->map = NULL;
    r->fd = -1;
    r->gso_fd = -1;
    r->send_fd = -1;
}

static struct tpacket2_hdr *frame_at(lvs_ring *r, unsigned i) {
    return (struct tpacket2_hdr *)((unsigned char *)r->map + (size_t)i * LVS_FRAME_SIZE);
}

void *lvs_ring_block(lvs_ring *r, unsigned *count) {
    unsigned n = 0;
    while (n < 64 && r->current + n < r->frame_count &&
           (__atomic_load_n(&frame_at(r, r->current + n)->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
        n++;
    r->taken = n;
    if (n == 0) return NULL;
    *count = n;
    return frame_at(r, r->current);
}

const unsigned char *lvs_ring_frame(void *frame, unsigned *length, unsigned *wire_length, unsigned *status, void **next) {
    struct tpacket2_hdr *h = frame;
    *length = h->tp_snaplen;
    *wire_length = h->tp_len;
    *status = h->tp_status;
    const struct sockaddr_ll *sll = (const struct sockaddr_ll *)((const unsigned char *)frame + TPACKET_ALIGN(sizeof(struct tpacket2_hdr)));
    if (sll->sll_pkttype == PACKET_OUTGOING) *status |= LVS_TP_STATUS_OUTGOING;
    *next = (unsigned char *)frame + LVS_FRAME_SIZE;
    return (const unsigned char *)frame + h->tp_mac;
}

unsigned long long lvs_ring_frame_time(lvs_ring *r, unsigned index) {
    const struct tpacket2_hdr *h = frame_at(r, (r->current + index) % r->frame_count);
    return (unsigned long long)h->tp_sec * 1000000000ull + h->tp_nsec;
}

long lvs_ring_copy(lvs_ring *r, unsigned char *buffer, size_t capacity) {
    for (;;) {
        ssize_t n = recv(r->fd, buffer, capacity, MSG_DONTWAIT | MSG_TRUNC);
        if (n >= 0) return (long)n;
        if (errno != EINTR) return -errno;
    }
}

void lvs_ring_discard(lvs_ring *r) {
    char byte;
    while (recv(r->fd, &byte, 1, MSG_DONTWAIT | MSG_TRUNC) < 0 && errno == EINTR) {}
}

void lvs_ring_release(lvs_ring *r) {
    for (unsigned k = 0; k < r->taken; k++)
        __atomic_store_n(&frame_at(r, r->current + k)->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    r->current = (r->current + r->taken) % r->frame_count;
    r->taken = 0;
}

int lvs_wait_readable(const int *fds, unsigned count, int timeout_ms) {
    struct pollfd p[count ? count : 1];  /* a worker's rings and sockets: a NIC may have many queues */
    for (unsigned i = 0; i < count; i++) {
        p[i].fd = fds[i];
        p[i].events = POLLIN | POLLRDNORM | POLLERR;
        p[i].revents = 0;
    }
    int n = poll(p, count, timeout_ms);
    return n < 0 ? -errno : n;
}

int lvs_send_frames(int fd, int vnet, const unsigned char *const *frames, const unsigned *lengths, unsigned count) {
    /* Frames lvsd sends are finished: an empty virtio-net header (no
       checksum left to do, no segmentation) where the socket expects one. */
    static const unsigned char plain[LVS_VNET_HDR_SIZE];
    struct mmsghdr msgs[64];
    struct iovec iov[64][2];
    unsigned sent = 0;
    while (sent < count) {
        unsigned n = count - sent > 64 ? 64 : count - sent;
        for (unsigned i = 0; i < n; i++) {
            iov[i][0].iov_base = (void *)plain;
            iov[i][0].iov_len = LVS_VNET_HDR_SIZE;
            iov[i][1].iov_base = (void *)frames[sent + i];
            iov[i][1].iov_len = lengths[sent + i];
            memset(&msgs[i], 0, sizeof(msgs[i]));
            msgs[i].msg_hdr.msg_iov = vnet ? iov[i] : &iov[i][1];
            msgs[i].msg_hdr.msg_iovlen = vnet ? 2 : 1;
        }
        int r = sendmmsg(fd, msgs, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return sent ? (int)sent : -errno;
        }
        sent += (unsigned)r;
        if ((unsigned)r < n) break;
    }
    return (int)sent;
}

int lvs_send_offloaded(int fd, const unsigned char *header, const unsigned char *frame, unsigned length) {
    struct iovec iov[2] = {
        {.iov_base = (void *)header, .iov_len = LVS_VNET_HDR_SIZE},
        {.iov_base = (void *)frame, .iov_len = length},
    };
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    for (;;) {
        ssize_t r = sendmsg(fd, &msg, 0);
        if (r >= 0) return 0;
        if (errno != EINTR) return -errno;
    }
}

unsigned lvs_ring_drops(lvs_ring *r) {
    struct tpacket_stats st;
    socklen_t len = sizeof(st);
    if (getsockopt(r->fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) < 0) return 0;
    return st.tp_drops;
}

int lvs_tun_open(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { int e = errno; close(fd); return -e; }
    return fd;
}

int lvs_packet_socket(int ifindex) {
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd < 0) return -errno;
    if (ifindex > 0) {
        struct sockaddr_ll sll;
        memset(&sll, 0, sizeof(sll));
        sll.sll_family = AF_PACKET;
        sll.sll_protocol = htons(ETH_P_ALL);
        sll.sll_ifindex = ifindex;
        if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) { int e = errno; close(fd); return -e; }
    }
    return fd;
}
