import LVSPacket
import LVSTestSupport
import Testing

@testable import LVSLinux

#if canImport(Glibc)
import Glibc
#endif

/// The TOA programs' option parser, run in the kernel (BPF_PROG_TEST_RUN)
/// on the TCP headers a FULLNAT director sends: the same code the sock_ops
/// program runs on the ACK that completes a handshake. A connection whose
/// TOA is missing or malformed keeps its own peer.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root to load BPF programs"))
struct TOAProgramTests {
    let builder = FrameBuilder()
    let lip = ip("198.19.0.100"), real = ip("198.19.0.11")
    let lip6 = ip("2001:db8:1::100"), real6 = ip("2001:db8:1::11")

    func ack(options: [UInt8], v6: Bool = false) -> [UInt8] {
        builder.frame(
            src: v6 ? lip6 : lip, dst: v6 ? real6 : real, FrameBuilder.tcp(sport: 1025, dport: 80, seq: 1001, ack: 5001, flags: 0x10, options: options))
    }

    @Test func aWellFormedTOANamesTheClient() throws {
        let toa = try TOAPrograms.load()
        let v4: [UInt8] = [254, 8, 0x9C, 0x40, 198, 18, 0, 100]
        var found = try toa.parse(frame: ack(options: v4))
        #expect(found.found == 8 && found.client?.0 == ip("198.18.0.100") && found.client?.1 == 40000)
        // After other options, as a Linux client's ACK has them (timestamps), and on an IPv6 connection.
        let v6: [UInt8] = [254, 20, 0x9C, 0x41] + FrameBuilder.addressBytes(ip("2001:db8::100"))
        found = try toa.parse(frame: ack(options: [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2] + v6, v6: true))
        #expect(found.found == 20 && found.client?.0 == ip("2001:db8::100") && found.client?.1 == 40001)
        // An IPv4 client on an IPv6 connection (a dual-stack director) is still a client.
        found = try toa.parse(frame: ack(options: v4, v6: true))
        #expect(found.found == 8 && found.client?.0 == ip("198.18.0.100"))
    }

    @Test func noTOAIsNone() throws {
        let toa = try TOAPrograms.load()
        for options: [UInt8] in [[], [2, 4, 5, 0xB4], [1, 1, 1, 0], [0, 0, 0, 0, 254, 8, 0, 80, 198, 18, 0, 100]] {
            let found = try toa.parse(frame: ack(options: options))
            #expect(found.found == 0 && found.client == nil, "\(options)")
        }
    }

    /// A bad length, an option running past the header, a header longer than the frame.
    @Test func aMalformedTOAIsRefused() throws {
        let toa = try TOAPrograms.load()
        for options: [UInt8] in [
            [254, 10, 0x9C, 0x40, 198, 18, 0, 100, 0, 0, 1, 0],  // a length neither family has
            [254, 6, 0x9C, 0x40, 198, 18, 1, 0],
            [1, 1, 254, 8],  // runs past the options
            [1, 1, 1, 254],  // no room for its length
            [254, 1, 0, 0],  // shorter than an option can be
        ] {
            let found = try toa.parse(frame: ack(options: options))
            #expect(found.found == -1 && found.client == nil, "\(options)")
        }
        let whole = ack(options: [254, 8, 0x9C, 0x40, 198, 18, 0, 100])
        let found = try toa.parse(frame: Array(whole.dropLast(3)))
        #expect(found.found == -1 && found.client == nil)
    }
}
