import CLVSLinux
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
}
