import LVSPacket

#if canImport(Glibc)
import Glibc
#endif

/// rtnetlink, read and written in Swift: the messages (`nlmsghdr`, then a
/// family header and attributes) are little-endian integers at fixed
/// offsets, decoded here from bytes; the socket is a `Socket`.
public enum RouteNetlink {
    /// Message types (linux/rtnetlink.h).
    public static let newLink: UInt16 = 16, deleteLink: UInt16 = 17, getLink: UInt16 = 18
    public static let newAddress: UInt16 = 20, deleteAddress: UInt16 = 21, getAddress: UInt16 = 22
    public static let newRoute: UInt16 = 24, deleteRoute: UInt16 = 25, getRoute: UInt16 = 26
    public static let newNeighbour: UInt16 = 28, deleteNeighbour: UInt16 = 29, getNeighbour: UInt16 = 30
    static let done: UInt16 = 3, error: UInt16 = 2, overrun: UInt16 = 4

    /// Multicast groups (RTMGRP_*): links, IPv4 and IPv6 addresses and routes, neighbours.
    public static let linkGroup: UInt32 = 0x1, neighbourGroup: UInt32 = 0x4
    public static let ipv4AddressGroup: UInt32 = 0x10, ipv4RouteGroup: UInt32 = 0x40
    public static let ipv6AddressGroup: UInt32 = 0x100, ipv6RouteGroup: UInt32 = 0x400
    /// Everything lvsd follows.
    public static let everyGroup = linkGroup | neighbourGroup | ipv4AddressGroup | ipv4RouteGroup | ipv6AddressGroup | ipv6RouteGroup

    /// A netlink socket for routes, links, addresses and neighbours; with
    /// `groups`, subscribed to their change notifications.
    public static func open(groups: UInt32 = 0, nonBlocking: Bool = false) throws(SystemError) -> Socket {
        let netlinkRoute: Int32 = 0
        let s = try Socket.open(family: AF_NETLINK, type: Socket.raw, protocol: netlinkRoute, nonBlocking: nonBlocking)
        do {
            // Room for bursts of notifications (a link going down takes its addresses and routes along).
            try? s.setOption(level: SOL_SOCKET, name: SO_RCVBUF, Int32(1 << 20), "SO_RCVBUF")
            try s.bind(.netlink(groups: groups))
        } catch {
            s.close()
            throw error
        }
        return s
    }

    /// Every object of a kind (`getLink`, `getAddress`, `getRoute`,
    /// `getNeighbour`), read as the kernel sends it, a datagram at a time.
    public static func dump(_ type: UInt16) throws(SystemError) -> [Message] {
        let s = try open()
        defer { s.close() }
        try s.setTimeouts(seconds: 5)
        // nlmsghdr (16) + rtgenmsg (1, padded to 4): NLM_F_REQUEST | NLM_F_DUMP, sequence 1, family AF_UNSPEC.
        var request = [UInt8](repeating: 0, count: 20)
        put32(&request, 0, 20)
        put16(&request, 4, type)
        put16(&request, 6, 0x0301)
        put32(&request, 8, 1)
        try s.send(request, to: .netlink(groups: 0))
        var out: [Message] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            guard let n = try s.receive(into: &buffer) else { throw SystemError("netlink dump \(type)", .timedOut) }
            var finished = false
            for m in messages(in: buffer[0..<n]) {
                switch m.type {
                case done: finished = true
                case error:
                    let code = m.body.count >= 4 ? Int32(bitPattern: le32(m.body, 0)) : 0
                    if code != 0 { throw SystemError("netlink dump \(type)", .init(rawValue: -code)) }
                    finished = true
                default: out.append(m)
                }
            }
            if finished { return out }
        }
    }

    /// One message: its type and the bytes after its 16-byte header.
    public struct Message: Sendable {
        public var type: UInt16
        public var body: [UInt8]
    }

    /// The messages of one datagram; a truncated or malformed one ends it.
    public static func messages(in bytes: ArraySlice<UInt8>) -> [Message] {
        var out: [Message] = []
        var o = bytes.startIndex
        while o + 16 <= bytes.endIndex {
            let length = Int(le32(bytes, o))
            guard length >= 16, o + length <= bytes.endIndex else { break }
            out.append(Message(type: le16(bytes, o + 4), body: Array(bytes[(o + 16)..<(o + length)])))
            o += (length + 3) & ~3
        }
        return out
    }

    /// The attributes (rtattr) that follow a family header of `from` bytes:
    /// type to value, the first of each type.
    public static func attributes(_ b: [UInt8], from start: Int) -> [UInt16: [UInt8]] {
        var out: [UInt16: [UInt8]] = [:]
        var o = start
        while o + 4 <= b.count {
            let length = Int(le16(b, o))
            let type = le16(b, o + 2) & 0x3FFF
            guard length >= 4, o + length <= b.count else { break }
            if out[type] == nil { out[type] = Array(b[(o + 4)..<(o + length)]) }
            o += (length + 3) & ~3
        }
        return out
    }

    public static func le16<C: RandomAccessCollection<UInt8>>(_ b: C, _ o: C.Index) -> UInt16 where C.Index == Int {
        UInt16(b[o]) | UInt16(b[o + 1]) << 8
    }

    public static func le32<C: RandomAccessCollection<UInt8>>(_ b: C, _ o: C.Index) -> UInt32 where C.Index == Int {
        UInt32(le16(b, o)) | UInt32(le16(b, o + 2)) << 16
    }

    static func put16(_ b: inout [UInt8], _ o: Int, _ v: UInt16) {
        b[o] = UInt8(truncatingIfNeeded: v)
        b[o + 1] = UInt8(truncatingIfNeeded: v >> 8)
    }

    static func put32(_ b: inout [UInt8], _ o: Int, _ v: UInt32) {
        put16(&b, o, UInt16(truncatingIfNeeded: v))
        put16(&b, o + 2, UInt16(truncatingIfNeeded: v >> 16))
    }

    /// An address attribute's bytes as an address.
    public static func address(_ raw: [UInt8]) -> IPAddress? {
        if raw.count == 4 { return .v4(IPv4Address(raw[0], raw[1], raw[2], raw[3])) }
        if raw.count == 16 {
            let high = raw[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let low = raw[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            return .v6(IPv6Address(high: high, low: low))
        }
        return nil
    }
}
