import LVSPacket

/// Builds test frames with correct checksums, independently of the code under test.
public struct FrameBuilder: Sendable {
    public var srcMAC: UInt64
    public var dstMAC: UInt64

    public init(srcMAC: UInt64 = 0x02_00_00_00_00_AA, dstMAC: UInt64 = 0x02_00_00_00_00_01) {
        self.srcMAC = srcMAC
        self.dstMAC = dstMAC
    }

    public static func checksum(_ bytes: [UInt8], _ range: Range<Int>, initial: UInt32 = 0) -> UInt16 {
        var sum = initial
        var i = range.lowerBound
        while i + 1 < range.upperBound {
            sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < range.upperBound { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }

    public static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 255)] }
    public static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }

    public static func addressBytes(_ a: IPAddress) -> [UInt8] {
        switch a {
        case .v4(let x): return be32(x.value)
        case .v6(let x): return be32(UInt32(x.high >> 32)) + be32(UInt32(x.high & 0xFFFF_FFFF)) + be32(UInt32(x.low >> 32)) + be32(UInt32(x.low & 0xFFFF_FFFF))
        }
    }

    public static func tcp(sport: UInt16, dport: UInt16, seq: UInt32 = 1000, ack: UInt32 = 0, flags: UInt8, options: [UInt8] = [], payload: [UInt8] = []) -> (
        UInt8, [UInt8]
    ) {
        let doff = (20 + options.count) / 4
        var t = be16(sport) + be16(dport) + be32(seq) + be32(ack)
        t += [UInt8(doff << 4), flags] + be16(65535) + [0, 0] + [0, 0]
        return (6, t + options + payload)
    }

    /// An SCTP packet; `frame` fills in its CRC32c. Each chunk is (type, flags, value), padded to 4 bytes.
    public static func sctp(sport: UInt16, dport: UInt16, tag: UInt32 = 0x0102_0304, chunks: [(UInt8, UInt8, [UInt8])]) -> (UInt8, [UInt8]) {
        var p = be16(sport) + be16(dport) + be32(tag) + [0, 0, 0, 0]
        for (type, flags, value) in chunks {
            p += [type, flags] + be16(UInt16(4 + value.count)) + value
            while p.count % 4 != 0 { p.append(0) }
        }
        return (132, p)
    }

    /// CRC32c bit by bit (RFC 3309), apart from the code under test.
    public static func crc32c(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            crc ^= UInt32(b)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }

    /// Whether an SCTP packet carries its CRC32c (least significant byte first).
    public static func sctpChecksumValid(_ packet: [UInt8]) -> Bool {
        var zeroed = packet
        zeroed.replaceSubrange(8..<12, with: [0, 0, 0, 0])
        let c = crc32c(zeroed)
        return packet[8..<12].elementsEqual([UInt8(c & 255), UInt8(c >> 8 & 255), UInt8(c >> 16 & 255), UInt8(c >> 24)])
    }

    public static func udp(sport: UInt16, dport: UInt16, payload: [UInt8] = [1, 2, 3, 4]) -> (UInt8, [UInt8]) {
        (17, be16(sport) + be16(dport) + be16(UInt16(8 + payload.count)) + [0, 0] + payload)
    }

    /// Ethernet + IP + transport with all checksums filled.
    public func frame(src: IPAddress, dst: IPAddress, _ l4: (UInt8, [UInt8]), ttl: UInt8 = 64) -> [UInt8] {
        let (proto, seg) = l4
        var segment = seg
        let sa = Self.addressBytes(src)
        let da = Self.addressBytes(dst)
        var pseudo: UInt32 = 0
        for b in stride(from: 0, to: sa.count, by: 2) { pseudo += UInt32(sa[b]) << 8 | UInt32(sa[b + 1]) }
        for b in stride(from: 0, to: da.count, by: 2) { pseudo += UInt32(da[b]) << 8 | UInt32(da[b + 1]) }
        pseudo += UInt32(proto) + UInt32(segment.count)
        let csumAt = proto == 6 ? 16 : proto == 17 ? 6 : 2
        if proto == 132 {
            let c = Self.crc32c(segment)
            segment.replaceSubrange(8..<12, with: [UInt8(c & 255), UInt8(c >> 8 & 255), UInt8(c >> 16 & 255), UInt8(c >> 24)])
        } else if segment.count < csumAt + 2 {
        } else if proto != 1 {
            var c = Self.checksum(segment, 0..<segment.count, initial: pseudo)
            if proto == 17 && c == 0 { c = 0xFFFF }
            segment[csumAt] = UInt8(c >> 8)
            segment[csumAt + 1] = UInt8(c & 255)
        } else {
            let c = Self.checksum(segment, 0..<segment.count)
            segment[2] = UInt8(c >> 8)
            segment[3] = UInt8(c & 255)
        }
        var eth = Self.be32(UInt32(dstMAC >> 16)) + Self.be16(UInt16(dstMAC & 0xFFFF)) + Self.be32(UInt32(srcMAC >> 16)) + Self.be16(UInt16(srcMAC & 0xFFFF))
        if src.isIPv6 {
            eth += Self.be16(0x86DD)
            let ip = [0x60, 0, 0, 0] + Self.be16(UInt16(segment.count)) + [proto, ttl] + sa + da
            return eth + ip + segment
        }
        eth += Self.be16(0x0800)
        var ip: [UInt8] = [0x45, 0] + Self.be16(UInt16(20 + segment.count)) + [0x12, 0x34, 0x40, 0, ttl, proto, 0, 0] + sa + da
        let c = Self.checksum(ip, 0..<20)
        ip[10] = UInt8(c >> 8)
        ip[11] = UInt8(c & 255)
        return eth + ip + segment
    }

    /// True when the IPv4 header checksum and the transport checksum of a
    /// frame verify by full recomputation.
    public static func checksumsValid(_ f: [UInt8]) -> Bool {
        let l3 = 14
        let v6 = f[12] == 0x86 && f[13] == 0xDD
        let ihl = v6 ? 40 : Int(f[l3] & 15) * 4
        if !v6 && checksum(f, l3..<(l3 + ihl)) != 0 { return false }
        let proto = v6 ? f[l3 + 6] : f[l3 + 9]
        let total = v6 ? 40 + (Int(f[l3 + 4]) << 8 | Int(f[l3 + 5])) : Int(f[l3 + 2]) << 8 | Int(f[l3 + 3])
        let l4 = l3 + ihl
        let end = l3 + total
        if proto == 1 { return checksum(f, l4..<end) == 0 }
        if proto == 132 { return sctpChecksumValid(Array(f[l4..<end])) }
        guard proto == 6 || proto == 17 || proto == 58 else { return true }
        if proto == 17 && !v6 && f[l4 + 6] == 0 && f[l4 + 7] == 0 { return true }
        var pseudo: UInt32 = 0
        let alen = v6 ? 16 : 4
        let sOff = v6 ? l3 + 8 : l3 + 12
        for b in stride(from: sOff, to: sOff + 2 * alen, by: 2) { pseudo += UInt32(f[b]) << 8 | UInt32(f[b + 1]) }
        pseudo += UInt32(proto) + UInt32(end - l4)
        return checksum(f, l4..<end, initial: pseudo) == 0
    }
}
