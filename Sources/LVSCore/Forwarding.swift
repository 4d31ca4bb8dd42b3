import LVSPacket

/// The forwarding rules, each written once: what a connection's method does
/// to a packet's headers in each direction, and when a packet needs more
/// than the rewrite (TOA, a sync record). The fast path and the general path
/// both call these, over a window of the frame (`HeaderLayout` says where its
/// headers are); TUN's outer header and TOA's option follow the rewrite.
enum Forwarding {
    /// Client → real server under NAT: the destination becomes the real server.
    /// `source`, `destination` and `ports` are the packet's as it came.
    @inline(__always)
    static func nat<A: IPAddressProtocol>(
        _ h: inout MutableRawSpan, _ at: HeaderLayout, source: A, destination: A, ports: UInt32,
        real: A, realPort: UInt16
    ) {
        PacketRewriter.forward(&h, at, from: source, destination, ports: ports, to: source, real, ports: ports & 0xFFFF_0000 | UInt32(realPort))
    }

    /// Client → real server under FULLNAT: the source becomes a local address too.
    @inline(__always)
    static func fullNAT<A: IPAddressProtocol>(
        _ h: inout MutableRawSpan, _ at: HeaderLayout, source: A, destination: A, ports: UInt32,
        real: A, realPort: UInt16, local: A, localPort: UInt16
    ) {
        PacketRewriter.forward(&h, at, from: source, destination, ports: ports, to: local, real, ports: UInt32(localPort) &<< 16 | UInt32(realPort))
    }

    /// Client → real server under DR, TUN (its outer header comes after) and
    /// local forwarding: only the hop.
    @inline(__always)
    static func hop<A: IPAddressProtocol>(_ h: inout MutableRawSpan, _ at: HeaderLayout, _: A.Type) {
        PacketRewriter.hop(&h, at, A.self)
    }

    /// Client → real server, by the connection's method (the general path's
    /// entry; the fast path calls the same three from its own dispatch).
    @inline(__always)
    static func towardsReal<A: IPAddressProtocol>(
        _ method: BoundMethod, _ h: inout MutableRawSpan, _ at: HeaderLayout, source: A, destination: A,
        ports: UInt32, connection c: borrowing Connection<A>
    ) {
        switch method {
        case .nat: nat(&h, at, source: source, destination: destination, ports: ports, real: c.real, realPort: c.realPort)
        case .fullNAT:
            fullNAT(&h, at, source: source, destination: destination, ports: ports, real: c.real, realPort: c.realPort, local: c.local, localPort: c.localPort)
        default: hop(&h, at, A.self)
        }
    }

    /// Real server → client (NAT and FULLNAT; DR and TUN replies do not pass
    /// the director): the source becomes the virtual service again, and under
    /// FULLNAT the destination the client.
    @inline(__always)
    static func towardsClient<A: IPAddressProtocol>(
        fullNAT: Bool, _ h: inout MutableRawSpan, _ at: HeaderLayout, source: A, destination: A,
        ports: UInt32, virtual: A, virtualPort: UInt16, client: A, clientPort: UInt16
    ) {
        PacketRewriter.forward(
            &h, at, from: source, destination, ports: ports, to: virtual, fullNAT ? client : destination,
            ports: UInt32(virtualPort) &<< 16 | (fullNAT ? UInt32(clientPort) : ports & 0xFFFF))
    }

    /// FULLNAT: the client's ACK of the real server's ISN + 1 carries TOA
    /// (DPVS's rule); `tcpFlags` and `acknowledgement` are the segment's.
    @inline(__always)
    static func wantsTOA(_ flags: ConnectionFlags, toaSequence: UInt32, tcpFlags: UInt8, acknowledgement: UInt32) -> Bool {
        flags.contains(.toaArmed) && tcpFlags & (TCPFlags.syn | TCPFlags.rst) == 0 && tcpFlags & TCPFlags.ack != 0
            && acknowledgement == toaSequence
    }

    /// A master syncs a connection on its 3rd client packet and every 50th
    /// after (`sync_threshold`, `sync_period`); `inPackets` counts this one.
    @inline(__always)
    static func syncDue(inPackets: UInt32) -> Bool {
        inPackets % syncPeriod == syncThreshold
    }

    /// Whether a count from `before` (exclusive) through `after` passed one
    /// that is due: the kernel forwarding's packets, counted in a lump.
    static func syncDue(after before: UInt32, through after: UInt32) -> Bool {
        // n is due when n + (period − threshold) is a multiple of the period.
        let shift = UInt64(syncPeriod - syncThreshold)
        return (UInt64(after) &+ shift) / UInt64(syncPeriod) != (UInt64(before) &+ shift) / UInt64(syncPeriod)
    }

    /// The kernel's `sync_threshold` and `sync_period` defaults (3, 50).
    static var syncThreshold: UInt32 { 3 }
    static var syncPeriod: UInt32 { 50 }
}
