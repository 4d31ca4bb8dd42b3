import LVSTestSupport
import Testing

@testable import LVSPacket

func parse(_ f: [UInt8]) throws(PacketError) -> ParsedPacket { try PacketParser.parse(f.span) }
func parseError(_ f: [UInt8]) -> PacketError? {
    do {
        _ = try parse(f)
        return nil
    } catch { return error }
}

let c4 = IPAddress("198.18.0.100")!
let v4 = IPAddress("198.18.0.10")!
let c6 = IPAddress("2001:db8::100")!
let v6 = IPAddress("2001:db8::10")!

@Suite struct ParserTests {
    let b = FrameBuilder()

    @Test func parsesTCPv4() throws {
        let f = b.frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x02, options: [2, 4, 5, 0xB4]))
        let p = try parse(f)
        #expect(p.ipVersion == 4 && p.proto == 6 && p.sourcePort == 40000 && p.destinationPort == 80)
        #expect(p.l3Offset == 14 && p.l4Offset == 34 && p.l4HeaderLength == 24 && p.tcpFlags == 0x02 && p.ipEnd == f.count)
        #expect(IPv4Address(f.span, at: p.sourceAddressOffset) == IPv4Address("198.18.0.100"))
    }

    @Test func parsesIPv6WithExtensionHeaders() throws {
        var f = b.frame(src: c6, dst: v6, FrameBuilder.udp(sport: 5353, dport: 53))
        // Insert a destination-options header (8 bytes) before UDP.
        let ext: [UInt8] = [17, 0, 1, 4, 0, 0, 0, 0]
        f[14 + 6] = 60
        f.insert(contentsOf: ext, at: 54)
        let plen = Int(f[18]) << 8 | Int(f[19]) + 8
        f[18] = UInt8(plen >> 8)
        f[19] = UInt8(plen & 255)
        let p = try parse(f)
        #expect(p.proto == 17 && p.l4Offset == 62 && p.destinationPort == 53)
    }

    @Test func vlanTag() throws {
        var f = b.frame(src: c4, dst: v4, FrameBuilder.udp(sport: 1, dport: 2))
        f.insert(contentsOf: [0x81, 0x00, 0x00, 0x07], at: 12)
        let p = try parse(f)
        #expect(p.vlanTCI == 7 && p.l3Offset == 18 && p.etherHeaderLength == 18)
    }

    @Test func malformedInputsHaveNamedReasons() {
        let good = b.frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 1, dport: 80, flags: 2))
        #expect(parseError(Array(good[0..<10])) == .truncatedEthernet)
        #expect(parseError(Array(good[0..<30])) == .truncatedIPv4)
        var ihl = good
        ihl[14] = 0x44
        #expect(parseError(ihl) == .badIHL)
        var total = good
        total[17] = 200
        #expect(parseError(total) == .ipv4TotalLengthBeyondFrame)
        var small = good
        small[16] = 0
        small[17] = 10
        #expect(parseError(small) == .ipv4TotalLengthBelowHeader)
        var csum = good
        csum[24] ^= 0xFF
        #expect(parseError(csum) == .badIPv4Checksum)
        let short = b.frame(src: c4, dst: v4, (6, [0, 1, 0, 80, 0, 0, 0, 0, 0, 0]))
        #expect(parseError(short) == .truncatedTCP)
        var doff = b.frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 1, dport: 80, flags: 2))
        doff[34 + 12] = 0x40
        #expect(parseError(doff) == .tcpDataOffsetBelowFive)
        var beyond = b.frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 1, dport: 80, flags: 2))
        beyond[34 + 12] = 0xF0
        #expect(parseError(beyond) == .tcpHeaderBeyondSegment)
        var lie = b.frame(src: c6, dst: v6, FrameBuilder.udp(sport: 1, dport: 2))
        lie[19] &+= 100
        #expect(parseError(lie) == .ipv6PayloadLengthBeyondFrame)
        var udpLen = b.frame(src: c4, dst: v4, FrameBuilder.udp(sport: 1, dport: 2))
        udpLen[38] = 0
        udpLen[39] = 4
        #expect(parseError(udpLen) == .badUDPLength)
        var version = good
        version[14] = 0x55
        #expect(parseError(version) == .badIPVersion)
    }

    @Test func everyTruncationIsRejectedNotTrapped() {
        let frames = [
            b.frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 1, dport: 80, flags: 2, options: [1, 1, 1, 1])),
            b.frame(src: c6, dst: v6, FrameBuilder.udp(sport: 1, dport: 2)),
        ]
        for f in frames {
            for n in 0..<f.count { #expect(parseError(Array(f[0..<n])) != nil) }
        }
    }

    @Test func fragmentsAreRecognised() throws {
        var first = b.frame(src: c4, dst: v4, FrameBuilder.udp(sport: 1, dport: 53))
        first[20] = 0x20  // MF
        first[24] = 0
        first[25] = 0
        let c = FrameBuilder.checksum(first, 14..<34)
        first[24] = UInt8(c >> 8)
        first[25] = UInt8(c & 255)
        let p = try parse(first)
        #expect(p.fragment == .first && p.destinationPort == 53)
        var later = first
        later[20] = 0x00
        later[21] = 0x10  // offset 16 * 8
        later[24] = 0
        later[25] = 0
        let c2 = FrameBuilder.checksum(later, 14..<34)
        later[24] = UInt8(c2 >> 8)
        later[25] = UInt8(c2 & 255)
        let q = try parse(later)
        #expect(q.fragment == .subsequent && q.destinationPort == 0 && !q.hasPorts)
    }
}

@Suite struct ChecksumTests {
    @Test func rfc1071Example() {
        let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]
        #expect(InternetChecksum.fold(InternetChecksum.sum(bytes.span, from: 0, count: 8)) == 0xDDF2)
    }

    /// The rotate-and-add fold gives what adding the halves until nothing
    /// carries gives, zero's two forms included (0 stays 0, 0xFFFF stays 0xFFFF).
    @Test func foldMatchesRepeatedHalfSums() {
        func reference(_ sum: UInt64) -> UInt16 {
            var s = sum
            while s > 0xFFFF { s = (s & 0xFFFF) &+ (s &>> 16) }
            return UInt16(s)
        }
        var values: [UInt64] = [
            0, 1, 0xFFFF, 0x1_0000, 0x1_FFFE, 0xFFFF_0000, 0xFFFE_FFFF, 0xFFFF_FFFF, 0x1_0000_0000,
            0x1_FFFF_FFFE, 0xFFFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000,
        ]
        var g = SystemRandomNumberGenerator()
        for bits in 1...64 { for _ in 0..<2000 { values.append(g.next() &>> (64 - UInt64(bits))) } }
        for v in values { #expect(InternetChecksum.fold(v) == reference(v), "\(v)") }
    }

    @Test func incrementalMatchesFullRecomputation() throws {
        var f = FrameBuilder().frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x10, payload: Array(0..<33)))
        let p = try parse(f)
        var s = f.mutableSpan
        PacketRewriter.rewrite(&s, p, source: IPv4Address("203.0.113.7")!, sourcePort: 1234, destination: IPv4Address("198.19.0.2")!, destinationPort: 8080)
        _ = PacketRewriter.decrementTTL(&s, p)
        _ = consume s
        #expect(FrameBuilder.checksumsValid(f))
        #expect(f[22] == 63)
    }
}

@Suite struct OptionTests {
    let b = FrameBuilder()

    func withHeadroom(_ f: [UInt8], _ n: Int = 64) -> ([UInt8], FrameBounds) {
        ([UInt8](repeating: 0, count: n) + f, FrameBounds(start: n, length: f.count))
    }

    @Test(arguments: [false, true]) func insertsTOA(ipv6: Bool) throws {
        let (c, v) = ipv6 ? (c6, v6) : (c4, v4)
        let f0 = b.frame(
            src: c, dst: v,
            FrameBuilder.tcp(sport: 40000, dport: 80, seq: 5, ack: 9, flags: 0x10, options: [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], payload: [7, 7, 7]))
        var (buf, bounds) = withHeadroom(f0)
        var p = try PacketParser.parse(buf.span, start: bounds.start, end: bounds.end)
        var s = buf.mutableSpan
        if ipv6 {
            try TCPOptionEditor.insertTOA(&s, frame: &bounds, packet: &p, address: IPv6Address("2001:db8::100")!, port: 40000, mtu: 1500)
        } else {
            try TCPOptionEditor.insertTOA(&s, frame: &bounds, packet: &p, address: IPv4Address("198.18.0.100")!, port: 40000, mtu: 1500)
        }
        _ = consume s
        let out = Array(buf[bounds.start..<bounds.end])
        let n = ipv6 ? 20 : 8
        #expect(out.count == f0.count + n)
        let tcp = ipv6 ? 54 : 34
        #expect(out[tcp + 20] == 254 && Int(out[tcp + 21]) == n)
        #expect(out[tcp + 22] == 0x9C && out[tcp + 23] == 0x40)
        #expect(Array(out[(tcp + 24)..<(tcp + 20 + n)]) == FrameBuilder.addressBytes(c))
        #expect(Int(out[tcp + 12] >> 4) * 4 == 20 + 12 + n)
        #expect(Array(out.suffix(3)) == [7, 7, 7])
        #expect(FrameBuilder.checksumsValid(out))
        let q = try parse(out)
        #expect(q.l4HeaderLength == 32 + n && q.payloadLength == 3)
    }

    @Test func prunesNOPsAndOldTOAWhenSpaceIsShort() throws {
        // 40 bytes of options: NOPs, an old TOA and a timestamp.
        let opts: [UInt8] = [1, 1, 1, 1, 1, 1, 1, 1, 254, 8, 0, 1, 1, 2, 3, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 1, 1]
        let f0 = b.frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 1, dport: 80, flags: 0x10, options: opts, payload: [9]))
        var (buf, bounds) = withHeadroom(f0)
        var p = try PacketParser.parse(buf.span, start: bounds.start, end: bounds.end)
        var s = buf.mutableSpan
        try TCPOptionEditor.insertTOA(&s, frame: &bounds, packet: &p, address: IPv4Address("198.18.0.100")!, port: 1, mtu: 1500)
        _ = consume s
        let out = Array(buf[bounds.start..<bounds.end])
        #expect(FrameBuilder.checksumsValid(out))
        let q = try parse(out)
        #expect(q.l4HeaderLength == 20 + 8 + 12)
        #expect(out[54] == 254 && out[55] == 8 && out[58] == 198)
        #expect(out.last == 9)
    }

    @Test func lowersMSS() throws {
        var f = b.frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 80, dport: 1, flags: 0x12, options: [2, 4, 0x05, 0xB4]))
        let p = try parse(f)
        var s = f.mutableSpan
        #expect(TCPOptionEditor.lowerMSS(&s, p, by: 8))
        _ = consume s
        #expect(f[56] == 0x05 && f[57] == 0xAC)
        #expect(FrameBuilder.checksumsValid(f))
    }
}

@Suite struct TunnelTests {
    @Test func ipipRoundTrip() throws {
        let f0 = FrameBuilder().frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 1, dport: 80, flags: 2), ttl: 33)
        var buf = [UInt8](repeating: 0, count: 64) + f0
        var bounds = FrameBounds(start: 64, length: f0.count)
        var p = try PacketParser.parse(buf.span, start: 64, end: bounds.end)
        var s = buf.mutableSpan
        try Encapsulation.encapsulate(&s, frame: &bounds, packet: &p, source: IPv4Address("198.19.0.1")!, destination: IPv4Address("198.19.0.2")!)
        _ = consume s
        let out = Array(buf[bounds.start..<bounds.end])
        #expect(out.count == f0.count + 20)
        #expect(out[14] == 0x45 && out[23] == 4 && out[22] == 33)
        #expect(Array(out[26..<30]) == [198, 19, 0, 1] && Array(out[30..<34]) == [198, 19, 0, 2])
        #expect(FrameBuilder.checksum(out, 14..<34) == 0)
        #expect(Array(out[34...]) == Array(f0[14...]))
        var s2 = buf.mutableSpan
        #expect(try Encapsulation.decapsulate(&s2, frame: &bounds, packet: &p))
        _ = consume s2
        #expect(Array(buf[bounds.start..<bounds.end]) == f0)
    }

    @Test func gueHeader() throws {
        let f0 = FrameBuilder().frame(src: c4, dst: v4, FrameBuilder.udp(sport: 1, dport: 53))
        var buf = [UInt8](repeating: 0, count: 64) + f0
        var bounds = FrameBounds(start: 64, length: f0.count)
        var p = try PacketParser.parse(buf.span, start: 64, end: bounds.end)
        var s = buf.mutableSpan
        try Encapsulation.encapsulate(
            &s, frame: &bounds, packet: &p, source: IPv6Address("2001:db8:1::1")!, destination: IPv6Address("2001:db8:1::2")!, gue: GUEOptions(port: 6080))
        _ = consume s
        let out = Array(buf[bounds.start..<bounds.end])
        #expect(out[12] == 0x86 && out[13] == 0xDD && out[20] == 17)
        #expect(out[56] == 0x17 && out[57] == 0xC0)  // dport 6080
        #expect(out[62] == 0 && out[63] == 4)  // GUE v0, inner IPv4
        #expect(FrameBuilder.checksumsValid(out))
        var s2 = buf.mutableSpan
        #expect(try Encapsulation.decapsulate(&s2, frame: &bounds, packet: &p, guePort: 6080))
        _ = consume s2
        #expect(Array(buf[bounds.start..<bounds.end]) == f0)
    }
}
