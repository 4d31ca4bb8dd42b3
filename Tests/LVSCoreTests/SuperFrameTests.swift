import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSCore

/// A TCP super-frame (GRO's, or a TSO sender's) goes through the engine
/// whole and leaves as GSO for the kernel to cut. The specification: the
/// segments the kernel cuts from it are, byte for byte, the segments the
/// engine would have sent had it been given them one by one, and the
/// counters and connection state end the same.
@Suite struct SuperFrameTests {
    let vip = ip("198.18.0.10")
    let client = ip("198.18.0.100")
    let real = ip("198.19.0.2")
    let lip = ip("198.19.0.100")
    let vip6 = ip("2001:db8::10")
    let client6 = ip("2001:db8::100")
    let real6 = ip("2001:db8:1::2")
    let rs = FrameBuilder(srcMAC: rsMAC.value, dstMAC: ifaceRealMAC.value)
    let mss = 1000

    func harness(_ m: ForwardingMethod, v6: Bool = false, synproxy: Bool = false) -> Harness {
        var s = VirtualServiceConfiguration(
            key: .address(.tcp, v6 ? vip6 : vip, 80), scheduler: "rr",
            realServers: [RealServerConfiguration(address: v6 ? real6 : real, port: m == .directRouting || m == .tunnel ? 80 : 8080, method: m)],
            localAddresses: m == .fullNAT ? [v6 ? ip("2001:db8:1::100") : lip] : [])
        s.synproxy = synproxy
        return Harness([s])
    }

    /// The frame as the kernel hands it over: the checksum field holds the
    /// pseudo-header's folded sum over the whole super-frame's length.
    func partial(_ full: [UInt8]) -> [UInt8] {
        var f = full
        let v6 = f[12] == 0x86
        let l4 = v6 ? 54 : 34
        let addresses = v6 ? (22..<54) : (26..<34)
        var sum: UInt32 = 6 + UInt32(f.count - l4)
        for k in stride(from: addresses.lowerBound, to: addresses.upperBound, by: 2) { sum += UInt32(f[k]) << 8 | UInt32(f[k + 1]) }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        f[l4 + 16] = UInt8(sum >> 8)
        f[l4 + 17] = UInt8(sum & 0xFF)
        return f
    }

    func header(for frame: [UInt8]) -> OffloadHeader {
        let v6 = frame[12] == 0x86
        return OffloadHeader(
            flags: OffloadHeader.needsChecksum, gsoType: v6 ? OffloadHeader.gsoTCPv6 : OffloadHeader.gsoTCPv4,
            headerLength: UInt16(v6 ? 74 : 54), segmentSize: UInt16(mss), checksumStart: UInt16(v6 ? 54 : 34), checksumOffset: 16)
    }

    /// What the kernel's GSO (here lvsd's own software GSO) makes of a frame.
    func cut(_ frame: [UInt8], _ h: OffloadHeader) throws -> [[UInt8]] {
        var scratch = [UInt8](repeating: 0, count: 4096)
        var out = scratch.mutableSpan
        var segments: [[UInt8]] = []
        _ = try SoftwareOffload.segment(frame.span, frame: FrameBounds(start: 0, length: frame.count), header: h, scratch: &out) {
            let s = $0
            segments.append((0..<s.count).map { s[$0] })
            return true
        }
        _ = scratch.count
        return segments
    }

    /// The super-frame through `processWhole`; its segments as the kernel would send them.
    func whole(_ h: inout Harness, _ frame: [UInt8], interface: UInt16) throws -> (Verdict?, [[UInt8]]) {
        let batch = FrameBatch(capacity: 1, slotSize: 128 + frame.count + 64, headroom: 128)
        let appended = batch.append(frame.span, interface: interface)
        #expect(appended)
        var bounds = batch.descriptors[0].bounds
        let now = h.now
        let verdict = batch.withSlot(0) { slot in h.director.processWhole(&slot, frame: &bounds, interface: interface, segmentSize: mss, now: now) }
        guard case .transmit = verdict else { return (verdict, []) }
        let input = header(for: frame)
        let gso = batch.withSlot(0) { SoftwareOffload.partialAgain(&$0, frame: bounds, like: input) }
        let out = batch.withSlot(0) { s in (bounds.start..<bounds.end).map { s[$0] } }
        let expected = try #require(gso)
        #expect(expected.segmentSize == UInt16(mss) && expected.checksumOffset == 16)
        // Partial, as the kernel expects it: finished over the whole, it verifies.
        var finished = out
        var span = finished.mutableSpan
        try SoftwareOffload.finishChecksum(&span, frame: FrameBounds(start: 0, length: out.count), start: Int(expected.checksumStart), offset: 16)
        #expect(FrameBuilder.checksumsValid(finished))
        return (verdict, try cut(out, expected))
    }

    /// The same super-frame cut first, each segment through `send`.
    func oneByOne(_ h: inout Harness, _ frame: [UInt8], interface: UInt16) throws -> [[UInt8]] {
        try cut(frame, header(for: frame)).map { segment in
            let (v, out) = h.send(segment, interface: interface)
            #expect(v == .transmit(interface: interface == 1 ? 2 : 1))
            return out
        }
    }

    func payload(_ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) } }

    /// Both harnesses through the same handshake, then the super-frame in
    /// both ways; the segments, counters and connections agree.
    func expectSame(_ m: ForwardingMethod, v6: Bool = false, reply: Bool = false) throws {
        var a = harness(m, v6: v6)
        var b = harness(m, v6: v6)
        let (c, v) = v6 ? (client6, vip6) : (client, vip)
        let syn = a.builder.frame(src: c, dst: v, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1000, flags: 0x02))
        let (_, toReal) = a.send(syn)
        _ = b.send(syn)
        let destinationPort = be16(toReal, v6 ? 56 : 36)
        let (realAddress, realSide) = v6 ? (real6, m == .fullNAT ? ip("2001:db8:1::100") : client6) : (real, m == .fullNAT ? lip : client)
        let localPort = be16(toReal, v6 ? 54 : 34)
        var frame: [UInt8]
        if m != .directRouting {
            let synAck = rs.frame(
                src: realAddress, dst: realSide, FrameBuilder.tcp(sport: destinationPort, dport: localPort, seq: 5000, ack: 1001, flags: 0x12))
            _ = a.send(synAck, interface: 2)
            _ = b.send(synAck, interface: 2)
        }
        // The ACK that completes the handshake (it carries TOA under FULLNAT).
        let ack = a.builder.frame(src: c, dst: v, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1001, ack: 5001, flags: 0x10))
        _ = a.send(ack)
        _ = b.send(ack)
        if reply {
            frame = rs.frame(
                src: realAddress, dst: realSide,
                FrameBuilder.tcp(sport: destinationPort, dport: localPort, seq: 5001, ack: 1001, flags: 0x18, payload: payload(2500)))
        } else {
            frame = a.builder.frame(src: c, dst: v, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1001, ack: 5001, flags: 0x18, payload: payload(2500)))
        }
        frame = partial(frame)
        let interface: UInt16 = reply ? 2 : 1
        let (verdict, segments) = try whole(&a, frame, interface: interface)
        #expect(verdict == .transmit(interface: reply ? 1 : 2))
        let expected = try oneByOne(&b, frame, interface: interface)
        #expect(segments.count == 3 && segments == expected)
        for s in segments { #expect(FrameBuilder.checksumsValid(s)) }
        let key = ServiceKey.address(.tcp, v, 80)
        #expect(a.director.service(key)!.counters == b.director.service(key)!.counters)
        #expect(a.director.service(key)!.destinations[0].counters == b.director.service(key)!.destinations[0].counters)
        #expect(a.director.shared.totals == b.director.shared.totals)
        #expect(a.director.shared.superFramesWhole == 1)
        if m == .fullNAT && !reply {
            // Data that acknowledges the server's ISN + 1 carries TOA in every segment, as DPVS sends it.
            let option = v6 ? 74 : 54
            for s in segments { #expect(s[option] == 254 && s[option + 1] == (v6 ? 20 : 8) && be16(s, option + 2) == 40000) }
            #expect(a.director.shared.toaInserted == b.director.shared.toaInserted - 2)
        }
    }

    @Test func natBothWaysIPv4AndIPv6() throws {
        try expectSame(.nat)
        try expectSame(.nat, reply: true)
        try expectSame(.nat, v6: true)
        try expectSame(.nat, v6: true, reply: true)
    }

    @Test func fullNATWithTOABothWays() throws {
        try expectSame(.fullNAT)
        try expectSame(.fullNAT, reply: true)
        try expectSame(.fullNAT, v6: true)
        try expectSame(.fullNAT, v6: true, reply: true)
    }

    @Test func directRouting() throws {
        try expectSame(.directRouting)
        try expectSame(.directRouting, v6: true)
    }

    /// What must be cut first is left as it was: a tunnel (GSO cannot
    /// repeat the outer header), the SYN proxy, a
    /// frame of no connection, and a trace, which shows every segment.
    @Test func whatMustBeCutFirstIsLeftUntouched() throws {
        let data = FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1001, ack: 5001, flags: 0x18, payload: payload(2500))
        func untouched(_ h: inout Harness, _ frame: [UInt8]) throws {
            let before = h.director.shared.totals
            let (verdict, _) = try whole(&h, frame, interface: 1)
            #expect(verdict == nil)
            #expect(h.director.shared.totals == before && h.director.shared.superFramesWhole == 0)
        }
        var none = harness(.nat)
        try untouched(&none, partial(none.builder.frame(src: client, dst: vip, data)))
        var tunnel = harness(.tunnel)
        _ = tunnel.send(tunnel.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1000, flags: 0x02)))
        try untouched(&tunnel, partial(tunnel.builder.frame(src: client, dst: vip, data)))
        var proxy = harness(.nat, synproxy: true)
        try untouched(&proxy, partial(proxy.builder.frame(src: client, dst: vip, data)))
        var traced = harness(.nat)
        _ = traced.send(traced.builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 1000, flags: 0x02)))
        _ = traced.director.trace(filter: nil, budget: 16)
        try untouched(&traced, partial(traced.builder.frame(src: client, dst: vip, data)))
    }
}
