import LVSTestSupport
import Testing

@testable import LVSPacket

/// What a sender with offloads on hands the kernel, and AF_PACKET hands lvsd:
/// frames whose transport checksum holds only the pseudo-header's sum
/// (CHECKSUM_PARTIAL), and super-frames of many segments (TSO, GRO).
@Suite struct OffloadTests {
    let b = FrameBuilder()

    /// The frame as a partial-checksum sender leaves it: the transport
    /// checksum field holds the pseudo-header's folded sum, not complemented.
    func partial(_ full: [UInt8], l4: Int, field: Int, v6: Bool = false) -> [UInt8] {
        var f = full
        let addresses = v6 ? (22..<54) : (26..<34)
        var sum: UInt32 = UInt32(f[v6 ? 20 : 23]) + UInt32(f.count - l4)
        for k in stride(from: addresses.lowerBound, to: addresses.upperBound, by: 2) { sum += UInt32(f[k]) << 8 | UInt32(f[k + 1]) }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        f[l4 + field] = UInt8(sum >> 8)
        f[l4 + field + 1] = UInt8(sum & 0xFF)
        return f
    }

    @Test func aPartialChecksumIsFinishedAsTheNICWould() throws {
        for (full, l4, field, v6) in [
            (b.frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 7, ack: 9, flags: 0x18, payload: Array(0..<201))), 34, 16, false),
            (b.frame(src: c4, dst: v4, FrameBuilder.udp(sport: 5353, dport: 53, payload: Array(repeating: 0xA5, count: 33))), 34, 6, false),
            (b.frame(src: c6, dst: v6, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x10, payload: [1, 2, 3])), 54, 16, true),
        ] {
            var f = partial(full, l4: l4, field: field, v6: v6)
            #expect(f != full)
            let frame = FrameBounds(start: 0, length: f.count)
            var span = f.mutableSpan
            try SoftwareOffload.finishChecksum(&span, frame: frame, start: l4, offset: field)
            #expect(f == full)
        }
    }

    /// AF_XDP says nothing of a frame's checksum state: a field that holds
    /// exactly the pseudo-header's sum, where the whole does not verify, is a
    /// partial checksum and is finished; a complete checksum, and a wrong one
    /// that is not a pseudo-header's sum, are left as they are.
    @Test func aPartialChecksumIsFoundWithoutAnOffloadHeader() {
        for (full, l4, field, v6) in [
            (b.frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 7, ack: 9, flags: 0x18, payload: Array(0..<201))), 34, 16, false),
            (b.frame(src: c4, dst: v4, FrameBuilder.udp(sport: 5353, dport: 53, payload: Array(repeating: 0xA5, count: 33))), 34, 6, false),
            (b.frame(src: c6, dst: v6, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x10, payload: [1, 2, 3])), 54, 16, true),
        ] {
            let frame = FrameBounds(start: 0, length: full.count)
            var f = partial(full, l4: l4, field: field, v6: v6)
            var span = f.mutableSpan
            #expect(SoftwareOffload.finishIfPartial(&span, frame: frame))
            #expect(f == full)
            var complete = full
            var completeSpan = complete.mutableSpan
            #expect(!SoftwareOffload.finishIfPartial(&completeSpan, frame: frame))
            #expect(complete == full)
            var wrong = full
            wrong[l4 + field] ^= 0x5A
            var wrongSpan = wrong.mutableSpan
            #expect(!SoftwareOffload.finishIfPartial(&wrongSpan, frame: frame))
            #expect(wrong[l4 + field] == full[l4 + field] ^ 0x5A)
        }
        // Ethernet padding after a short segment is not summed.
        let ack = b.frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 40000, dport: 80, flags: 0x10))
        var padded = partial(ack, l4: 34, field: 16) + [UInt8](repeating: 0xEE, count: 6)
        let frame = FrameBounds(start: 0, length: padded.count)
        var span = padded.mutableSpan
        #expect(SoftwareOffload.finishIfPartial(&span, frame: frame))
        #expect(Array(padded[0..<ack.count]) == ack)
    }

    @Test func aChecksumPlaceOutsideTheFrameIsRefused() {
        var f = b.frame(src: c4, dst: v4, FrameBuilder.udp(sport: 1, dport: 2))
        _ = f.count
        var span = f.mutableSpan
        #expect(throws: OffloadError.badChecksumPlace) {
            try SoftwareOffload.finishChecksum(&span, frame: FrameBounds(start: 0, length: 46), start: 34, offset: 16)
        }
    }

    /// Segments of a 4000-byte TSO frame (PSH|ACK, MSS 1448): three frames of
    /// 1448, 1448 and 1104 bytes of payload, each with its own total length,
    /// identification (+1 each), sequence number and checksums; PSH on the
    /// last one only; the payload in order.
    @Test func aTCPv4SuperFrameBecomesTheSegmentsItsSenderWouldHaveSent() throws {
        let payload = (0..<4000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let big = partial(
            b.frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1000, ack: 5000, flags: 0x18, payload: payload)), l4: 34, field: 16)
        let h = OffloadHeader(
            flags: OffloadHeader.needsChecksum, gsoType: OffloadHeader.gsoTCPv4, headerLength: 54, segmentSize: 1448, checksumStart: 34, checksumOffset: 16)
        let segments = try segments(big, h)
        #expect(segments.map { $0.count - 54 } == [1448, 1448, 1104])
        var joined: [UInt8] = []
        for (k, s) in segments.enumerated() {
            #expect(FrameBuilder.checksumsValid(s), "segment \(k)")
            #expect(be16(s, 16) == UInt16(s.count - 14))
            #expect(be16(s, 18) == 0x1234 + UInt16(k))
            #expect(UInt32(be16(s, 38)) << 16 | UInt32(be16(s, 40)) == 1000 + UInt32(k * 1448))
            #expect(s[47] == (k == 2 ? 0x18 : 0x10))
            #expect(Array(s[0..<16]) == Array(big[0..<16]))
            #expect(Array(s[26..<38]) == Array(big[26..<38]))  // addresses and ports
            joined += s[54...]
        }
        #expect(joined == payload)
    }

    @Test func aTCPv6SuperFrameWithFINAndCWR() throws {
        let payload = [UInt8](repeating: 0x42, count: 2500)
        let big = partial(
            b.frame(src: c6, dst: v6, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1, ack: 2, flags: 0x80 | 0x10 | 0x01, payload: payload)), l4: 54,
            field: 16, v6: true)
        let h = OffloadHeader(
            flags: OffloadHeader.needsChecksum, gsoType: OffloadHeader.gsoTCPv6 | OffloadHeader.gsoECN, segmentSize: 1200, checksumStart: 54, checksumOffset: 16
        )
        let segments = try segments(big, h)
        #expect(segments.map { $0.count - 74 } == [1200, 1200, 100])
        for (k, s) in segments.enumerated() {
            #expect(FrameBuilder.checksumsValid(s), "segment \(k)")
            #expect(be16(s, 18) == UInt16(s.count - 54))
            // CWR on the first, FIN on the last.
            #expect(s[67] == [0x90, 0x10, 0x11][k])
        }
    }

    @Test func aUDPSegmentationSuperFrame() throws {
        let big = partial(b.frame(src: c4, dst: v4, FrameBuilder.udp(sport: 4000, dport: 53, payload: [UInt8](repeating: 9, count: 3000))), l4: 34, field: 6)
        let h = OffloadHeader(flags: OffloadHeader.needsChecksum, gsoType: OffloadHeader.gsoUDPL4, segmentSize: 1400, checksumStart: 34, checksumOffset: 6)
        let segments = try segments(big, h)
        #expect(segments.map { $0.count - 42 } == [1400, 1400, 200])
        for s in segments {
            #expect(FrameBuilder.checksumsValid(s))
            #expect(be16(s, 38) == UInt16(s.count - 34))
        }
    }

    @Test func whatCannotBeSegmentedIsRefused() {
        let f = b.frame(src: c4, dst: v4, FrameBuilder.tcp(sport: 1, dport: 2, flags: 0x10, payload: [1, 2, 3]))
        for h in [
            OffloadHeader(flags: OffloadHeader.needsChecksum, gsoType: OffloadHeader.gsoUDP, segmentSize: 100, checksumStart: 34, checksumOffset: 16),  // UFO
            // TCPv6 segmentation of an IPv4 frame.
            OffloadHeader(flags: OffloadHeader.needsChecksum, gsoType: OffloadHeader.gsoTCPv6, segmentSize: 100, checksumStart: 34, checksumOffset: 16),
            OffloadHeader(flags: OffloadHeader.needsChecksum, gsoType: OffloadHeader.gsoTCPv4, segmentSize: 0, checksumStart: 34, checksumOffset: 16),
            OffloadHeader(flags: OffloadHeader.needsChecksum, gsoType: OffloadHeader.gsoTCPv4, segmentSize: 100, checksumStart: 4000, checksumOffset: 16),
            OffloadHeader(flags: 0, gsoType: OffloadHeader.gsoTCPv4, segmentSize: 100, checksumStart: 34, checksumOffset: 16),
        ] {
            #expect(throws: OffloadError.unsupportedSegmentation) { _ = try segments(f, h) }
        }
    }

    func segments(_ f: [UInt8], _ h: OffloadHeader) throws(OffloadError) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var scratch = [UInt8](repeating: 0, count: 2048)
        var span = scratch.mutableSpan
        _ = try SoftwareOffload.segment(f.span, frame: FrameBounds(start: 0, length: f.count), header: h, scratch: &span) { s in
            out.append((0..<s.count).map { s[$0] })
            return true
        }
        return out
    }

    func be16(_ f: [UInt8], _ at: Int) -> UInt16 { UInt16(f[at]) << 8 | UInt16(f[at + 1]) }

    @Test func theHeaderReadsAsTheKernelWritesIt() {
        let bytes: [UInt8] = [1, 4, 74, 0, 0xA0, 0x05, 54, 0, 16, 0]
        let h = OffloadHeader(bytes.span, at: 0)
        #expect(h == OffloadHeader(flags: 1, gsoType: 4, headerLength: 74, segmentSize: 1440, checksumStart: 54, checksumOffset: 16))
        #expect(h.isSegmented && !h.isPlain)
    }
}
