import CLVSLinux
import LVSCore
import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSLinux

#if canImport(Glibc)
import Glibc
#endif

/// The BPF programs as Katran tests its own: frames in through
/// BPF_PROG_TEST_RUN, verdicts, counters and frames out. Loading a program
/// needs root, as CI has.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root to load BPF programs"))
struct BPFProgramTests {
    static let xdpPass: Int32 = 2
    static let tcxNext: Int32 = -1
    let builder = FrameBuilder()
    let client = ip("198.18.0.100"), vip = ip("198.19.0.10"), director = ip("198.19.0.1"), real = ip("198.19.0.11")
    let client6 = ip("2001:db8::100"), vip6 = ip("2001:db8:1::10"), director6 = ip("2001:db8:1::1"), real6 = ip("2001:db8:1::11")

    // MARK: lvsd's redirect program

    func redirectProgram() throws -> BPFProgram {
        let addresses = try BPFAddressMap(capacity: 64)
        try addresses.set(vip, flags: UInt32(LVS_XDP_OWNED))
        try addresses.set(vip6, flags: UInt32(LVS_XDP_OWNED))
        try addresses.set(director, flags: UInt32(LVS_XDP_HOST))
        try addresses.set(real, flags: UInt32(LVS_XDP_REPLY_SOURCE))
        return try BPFProgram.redirect(addresses: addresses, queues: 4)
    }

    /// Runs `frame` and says which counter moved; the frame must leave as it came.
    func outcome(_ program: BPFProgram, _ frame: [UInt8]) throws -> Int {
        let before = program.counters(Int(LVS_XDP_COUNTERS.rawValue))
        let (verdict, out) = try program.run(frame)
        #expect(verdict == Self.xdpPass, "no socket is bound, so even lvsd's frames pass")
        #expect(out == frame, "the redirect program never changes a frame")
        let after = program.counters(Int(LVS_XDP_COUNTERS.rawValue))
        let moved = (0..<after.count).filter { after[$0] != before[$0] }
        #expect(moved.count == 1 && after[moved[0]] == before[moved[0]] + 1, "\(before) -> \(after)")
        return moved.first ?? -1
    }

    @Test func lvsdsFramesAreRedirectedTheRestPasses() throws {
        let program = try redirectProgram()
        let ours = Int(LVS_XDP_NO_SOCKET.rawValue)
        let passed = Int(LVS_XDP_PASSED.rawValue)
        let truncated = Int(LVS_XDP_TRUNCATED.rawValue)
        let syn = FrameBuilder.tcp(sport: 40000, dport: 80, flags: TCPFlags.syn)
        // To a VIP, IPv4 and IPv6, tagged or not.
        #expect(try outcome(program, builder.frame(src: client, dst: vip, syn)) == ours)
        #expect(try outcome(program, builder.frame(src: client6, dst: vip6, syn)) == ours)
        var tagged = builder.frame(src: client, dst: vip, syn)
        tagged.insert(contentsOf: [0x81, 0x00, 0x00, 0x07], at: 12)
        #expect(try outcome(program, tagged) == ours)
        // A NAT real server's reply to a client is lvsd's; its answer to the host (a health check) is not.
        let reply = FrameBuilder.tcp(sport: 80, dport: 40000, flags: TCPFlags.syn | TCPFlags.ack)
        #expect(try outcome(program, builder.frame(src: real, dst: client, reply)) == ours)
        #expect(try outcome(program, builder.frame(src: real, dst: director, reply)) == passed)
        // Neither, ARP, and frames too short for their headers.
        #expect(try outcome(program, builder.frame(src: client, dst: ip("198.19.0.99"), syn)) == passed)
        #expect(try outcome(program, builder.frame(src: real6, dst: director6, syn)) == passed)
        var arp = [UInt8](repeating: 0, count: 42)
        arp[12] = 0x08
        arp[13] = 0x06
        #expect(try outcome(program, arp) == passed)
        #expect(try outcome(program, Array(builder.frame(src: client, dst: vip, syn).prefix(30))) == truncated)
        // (BPF_PROG_TEST_RUN takes nothing shorter than an Ethernet header.)
        #expect(try outcome(program, Array(tagged.prefix(16))) == truncated)
    }

    // MARK: lvs-realserver's decapsulator

    /// `inner` (an Ethernet frame) in an outer IPv4 or IPv6 header from the
    /// director to a real server, optionally in UDP and GUE first.
    func tunnelled(_ inner: [UInt8], outer6: Bool = false, gue: UInt16? = nil, ihl: UInt8 = 5) -> [UInt8] {
        let packet = Array(inner.dropFirst(14))
        let innerProto: UInt8 = inner[12] == 0x08 ? 4 : 41
        var payload = packet
        var proto = innerProto
        if let gue {
            let length = UInt16(8 + 4 + packet.count)
            payload = FrameBuilder.be16(5555) + FrameBuilder.be16(gue) + FrameBuilder.be16(length) + [0, 0] + [0, innerProto, 0, 0] + packet
            proto = IPProtocolNumber.udp
        }
        var frame = Array(inner.prefix(12))
        if outer6 {
            frame += [0x86, 0xDD, 0x60, 0, 0, 0] + FrameBuilder.be16(UInt16(payload.count)) + [proto, 64]
            frame += FrameBuilder.addressBytes(director6) + FrameBuilder.addressBytes(real6) + payload
            return frame
        }
        let options = [UInt8](repeating: 1, count: Int(ihl - 5) * 4)
        var header: [UInt8] = [0x40 | ihl, 0] + FrameBuilder.be16(UInt16(Int(ihl) * 4 + payload.count)) + [0, 1, 0x40, 0, 64, proto, 0, 0]
        header += FrameBuilder.addressBytes(director) + FrameBuilder.addressBytes(real) + options
        let sum = FrameBuilder.checksum(header, 0..<header.count)
        header[10] = UInt8(sum >> 8)
        header[11] = UInt8(sum & 0xFF)
        return frame + [0x08, 0x00] + header + payload
    }

    func decapsulators() throws -> [(BPFProgram, Int32)] {
        let vips = try BPFAddressMap(capacity: 16)
        try vips.set(vip, flags: 1)
        try vips.set(vip6, flags: 1)
        return [
            (try BPFProgram.decapsulator(vips: vips, guePort: 6080, tc: false), Self.xdpPass),
            (try BPFProgram.decapsulator(vips: vips, guePort: 6080, tc: true), Self.tcxNext),
        ]
    }

    @Test func tunnelPacketsForAVIPLoseTheirOuterHeadersAndNothingElseChanges() throws {
        let syn = FrameBuilder.tcp(sport: 40000, dport: 80, flags: TCPFlags.syn)
        let inner4 = builder.frame(src: client, dst: vip, syn)
        let inner6 = builder.frame(src: client6, dst: vip6, syn)
        for (program, next) in try decapsulators() {
            let stripped = Int(LVS_DECAP_STRIPPED.rawValue)
            let passed = Int(LVS_DECAP_PASSED.rawValue)
            func check(_ frame: [UInt8], becomes expected: [UInt8], counted slot: Int, _ what: String) throws {
                let before = program.counters(Int(LVS_DECAP_COUNTERS.rawValue))
                let (verdict, out) = try program.run(frame)
                let after = program.counters(Int(LVS_DECAP_COUNTERS.rawValue))
                #expect(verdict == next, "\(what)")
                #expect(out == expected, "\(what): \(out.count) bytes, expected \(expected.count)")
                #expect(after[slot] == before[slot] + 1, "\(what)")
            }
            try check(tunnelled(inner4), becomes: inner4, counted: stripped, "IPIP")
            try check(tunnelled(inner6), becomes: inner6, counted: stripped, "IPv6 in IPv4")
            try check(tunnelled(inner6, outer6: true), becomes: inner6, counted: stripped, "IPv6 in IPv6")
            try check(tunnelled(inner4, outer6: true), becomes: inner4, counted: stripped, "IPv4 in IPv6")
            try check(tunnelled(inner4, gue: 6080), becomes: inner4, counted: stripped, "GUE")
            try check(tunnelled(inner6, outer6: true, gue: 6080), becomes: inner6, counted: stripped, "GUE over IPv6")
            // Not for a VIP, not this GUE port, an outer header with options, truncated, not a tunnel.
            let other = builder.frame(src: client, dst: ip("198.19.0.99"), syn)
            for (frame, what) in [
                (tunnelled(other), "IPIP to another address"), (tunnelled(inner4, gue: 6081), "UDP to another port"),
                (tunnelled(inner4, ihl: 6), "outer header with options"),
                (Array(tunnelled(inner4).prefix(14 + 20 + 10)), "truncated inner header"), (inner4, "no tunnel"),
            ] {
                try check(frame, becomes: frame, counted: passed, what)
            }
        }
    }

    // MARK: lvsd's kernel forwarding

    static let tcOK: Int32 = 0
    static let tcRedirect: Int32 = 7

    /// A TCP connection client:40000 → VIP:80 handed down as NAT to RIP:8080 out of interface 7.
    func kernelForwarding() throws -> (KernelForwarding, [KernelFlowRule]) {
        let kf = try KernelForwarding(interfaces: [], capacity: 16)
        let c = IPv4Address("198.18.0.100")!
        let v = IPv4Address("198.19.0.10")!
        let r = IPv4Address("198.19.0.11")!
        var rules: [KernelFlowRule] = []
        for proto: UInt8 in [6, 17] {
            rules.append(
                KernelFlowRule(
                    proto: proto, source: c, sourcePort: 40000, destination: v, destinationPort: 80, newSource: c, newSourcePort: 40000,
                    newDestination: r, newDestinationPort: 8080, interface: 7, destinationMAC: MACAddress(0x02_00_00_00_01_0B),
                    sourceMAC: MACAddress(0x02_00_00_00_00_02)))
            rules.append(
                KernelFlowRule(
                    proto: proto, source: r, sourcePort: 8080, destination: c, destinationPort: 40000, newSource: v, newSourcePort: 80,
                    newDestination: c, newDestinationPort: 40000, interface: 5, destinationMAC: MACAddress(0x02_00_00_00_00_AA),
                    sourceMAC: MACAddress(0x02_00_00_00_00_01)))
        }
        for (slot, rule) in rules.enumerated() { try kf.set(rule, slot: UInt32(slot)) }
        return (kf, rules)
    }

    @Test func aHandedDownConnectionsFramesAreRewrittenAsTheFastPathWouldAndRedirected() throws {
        let (kf, rules) = try kernelForwarding()
        let program = kf
        let payload = [UInt8](repeating: 0x61, count: 100)
        let data = builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, seq: 5, ack: 9, flags: TCPFlags.ack, payload: payload))
        let (verdict, out) = try program.run(data)
        #expect(verdict == Self.tcRedirect)
        #expect(field(out, 0, 6) == [2, 0, 0, 0, 1, 0x0B] && field(out, 6, 6) == [2, 0, 0, 0, 0, 2])  // the real server's MAC, ours
        #expect(out[22] == 63)  // TTL − 1
        #expect(field(out, 26, 4) == [198, 18, 0, 100] && field(out, 30, 4) == [198, 19, 0, 11])  // VIP → RIP
        #expect(be16(out, 34) == 40000 && be16(out, 36) == 8080)  // 80 → 8080
        #expect(field(out, 12, 10) == field(data, 12, 10) && field(out, 23, 1) == field(data, 23, 1) && field(out, 38, 12) == field(data, 38, 12))
        #expect(Array(out[52...]) == Array(data[52...]) && out.count == data.count && FrameBuilder.checksumsValid(out))
        // Counted in the rule's slot, read from memory.
        #expect(kf.count(0) == (1, 40 + 100) && kf.count(1) == (0, 0))

        let reply = FrameBuilder(srcMAC: 0x02_00_00_00_01_0B, dstMAC: 0x02_00_00_00_00_02)
            .frame(src: real, dst: client, FrameBuilder.tcp(sport: 8080, dport: 40000, seq: 9, ack: 105, flags: TCPFlags.ack))
        let (v2, back) = try program.run(reply)
        #expect(v2 == Self.tcRedirect && field(back, 0, 6) == [2, 0, 0, 0, 0, 0xAA] && field(back, 6, 6) == [2, 0, 0, 0, 0, 1])
        #expect(field(back, 26, 4) == [198, 19, 0, 10] && be16(back, 34) == 80 && field(back, 30, 4) == [198, 18, 0, 100] && be16(back, 36) == 40000)
        #expect(back[22] == 63 && FrameBuilder.checksumsValid(back))

        // UDP: the checksum follows; a datagram without one keeps none.
        let datagram = builder.frame(src: client, dst: vip, FrameBuilder.udp(sport: 40000, dport: 80))
        let (v3, udp) = try program.run(datagram)
        #expect(v3 == Self.tcRedirect && field(udp, 30, 4) == [198, 19, 0, 11] && be16(udp, 36) == 8080 && FrameBuilder.checksumsValid(udp))
        var bare = datagram
        bare[40] = 0
        bare[41] = 0
        let (v4, plain) = try program.run(bare)
        #expect(v4 == Self.tcRedirect && be16(plain, 40) == 0 && FrameBuilder.checksumsValid(plain))

        #expect(kf.forwardedFrames == 4 && kf.count(1) == (1, 40) && kf.count(2) == (2, 64))
    }

    @Test func whatMovesTheStateOrTheFastPathDeclinesGoesToLvsd() throws {
        let (kf, _) = try kernelForwarding()
        let program = kf
        let ack = FrameBuilder.tcp(sport: 40000, dport: 80, flags: TCPFlags.ack)
        var options = builder.frame(src: client, dst: vip, ack)
        options.insert(contentsOf: [1, 1, 1, 0], at: 34)
        options[14] = 0x46
        var fragment = builder.frame(src: client, dst: vip, ack)
        fragment[20] = 0x20  // more fragments
        var badHeader = builder.frame(src: client, dst: vip, ack)
        badHeader[24] ^= 0xFF
        var tagged = builder.frame(src: client, dst: vip, ack)
        tagged.insert(contentsOf: [0x81, 0x00, 0x00, 0x07], at: 12)
        let cases: [([UInt8], String)] = [
            (builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, flags: TCPFlags.syn)), "SYN"),
            (builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, flags: TCPFlags.fin | TCPFlags.ack)), "FIN"),
            (builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40000, dport: 80, flags: TCPFlags.rst)), "RST"),
            (builder.frame(src: client, dst: vip, FrameBuilder.tcp(sport: 40001, dport: 80, flags: TCPFlags.ack)), "another connection"),
            (builder.frame(src: client, dst: vip, ack, ttl: 1), "TTL 1"),
            (options, "IP options"), (fragment, "a fragment"), (badHeader, "a bad header checksum"), (tagged, "a VLAN tag"),
            (builder.frame(src: client6, dst: vip6, ack), "IPv6"), (Array(builder.frame(src: client, dst: vip, ack).prefix(40)), "truncated"),
        ]
        for (frame, what) in cases {
            let (verdict, out) = try program.run(frame)
            #expect(verdict == Self.tcOK && out == frame, "\(what)")
        }
        #expect(kf.forwardedFrames == 0 && (0..<4).allSatisfy { kf.count($0) == (0, 0) })
    }
}
