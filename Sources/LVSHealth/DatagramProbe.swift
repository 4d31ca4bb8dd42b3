import LVSConfiguration
import LVSPacket
import LVSSystem
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// UDP_CHECK's, DNS_CHECK's and PING_CHECK's exchange: one datagram from a
/// connected socket, so that an ICMP error for it (port unreachable) comes
/// back as the socket's error and only the peer's answers are read, then
/// the first answer `accepts` takes.
enum DatagramProbe {
    /// The accepted answer; nil when none came within `timeout` (and no
    /// error). `raw`: an IP protocol spoken over a raw socket (ICMP) instead of UDP.
    static func exchange(
        _ address: IPAddress, _ port: UInt16, payload: [UInt8], timeout: Double, group: any EventLoopGroup, raw: Int32? = nil,
        accepts: @escaping @Sendable ([UInt8]) -> Bool = { _ in true }
    ) async -> Result<[UInt8]?, ProbeFailure> {
        let loop = group.next()
        let outcome = Probe.Outcome(loop.makePromise(of: [UInt8].self))
        defer { outcome.fail(ProbeFailure(description: "abandoned")) }
        let to: NIOCore.SocketAddress
        let channel: any Channel
        do {
            to = try SocketAddress(ipAddress: "\(address)", port: Int(port))
            let bootstrap = DatagramBootstrap(group: loop).channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Receiver(outcome, accepts)) }
            }
            if let raw {
                let s = try Socket.open(family: address.isIPv6 ? AF_INET6 : AF_INET, type: Socket.raw, protocol: raw, nonBlocking: true)
                do {
                    switch address {
                    case .v4(let a):
                        try s.bind(.ipv4(.zero, port: 0))
                        try s.connect(.ipv4(a, port: 0))
                    case .v6(let a):
                        try s.bind(.ipv6(.zero, port: 0, scope: 0))
                        try s.connect(.ipv6(a, port: 0, scope: 0))
                    }
                } catch {
                    s.close()
                    throw error
                }
                channel = try await bootstrap.withBoundSocket(s.rawValue).get()
            } else {
                channel = try await bootstrap.connect(to: to).get()
            }
        } catch {
            return .failure(ProbeFailure(description: "socket: \(error)"))
        }
        defer { channel.close(promise: nil) }
        let deadline = loop.scheduleTask(in: .milliseconds(Int64(max(0.1, timeout) * 1000))) { outcome.fail(Silence()) }
        defer { deadline.cancel() }
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: to, data: ByteBuffer(bytes: payload)), promise: nil)
        do {
            return .success(try await outcome.promise.futureResult.get())
        } catch is Silence {
            return .success(nil)
        } catch let e as ProbeFailure {
            return .failure(e)
        } catch {
            return .failure(ProbeFailure(description: "\(error)"))
        }
    }

    /// No answer by the deadline: for UDP_CHECK without `require_reply`, a pass.
    struct Silence: Error {}

    final class Receiver: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let outcome: Probe.Outcome
        let accepts: @Sendable ([UInt8]) -> Bool
        init(_ outcome: Probe.Outcome, _ accepts: @escaping @Sendable ([UInt8]) -> Bool) {
            self.outcome = outcome
            self.accepts = accepts
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data).data
            let bytes = b.readBytes(length: b.readableBytes) ?? []
            if accepts(bytes) { outcome.succeed(bytes) }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if let e = error as? IOError {
                outcome.fail(ProbeFailure(description: SystemError("recv", errno: e.errnoCode).description))
            } else {
                outcome.fail(ProbeFailure(description: "\(error)"))
            }
        }
    }
}

/// PING_CHECK's echo request and the reply it takes (ICMP, ICMPv6).
enum PingProbe {
    static func request(id: UInt16, ipv6: Bool) -> [UInt8] {
        var m: [UInt8] = [ipv6 ? 128 : 8, 0, 0, 0, UInt8(id >> 8), UInt8(id & 0xFF), 0, 1] + Array("lvsd health check".utf8)
        // ICMPv6's checksum covers a pseudo-header: the kernel computes it for a raw ICMPv6 socket.
        if !ipv6 {
            var sum: UInt32 = 0
            for i in stride(from: 0, to: m.count, by: 2) { sum += UInt32(m[i]) << 8 | UInt32(i + 1 < m.count ? m[i + 1] : 0) }
            while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
            let c = ~UInt16(sum)
            (m[2], m[3]) = (UInt8(c >> 8), UInt8(c & 0xFF))
        }
        return m
    }

    /// Whether `packet` (with its IPv4 header, as a raw IPv4 socket reads it) is the echo reply to `id`.
    static func answers(_ packet: [UInt8], id: UInt16, ipv6: Bool) -> Bool {
        let at = ipv6 ? 0 : (Int(packet.first ?? 0x45) & 0x0F) * 4
        guard packet.count >= at + 8 else { return false }
        return packet[at] == (ipv6 ? 129 : 0) && UInt16(packet[at + 4]) << 8 | UInt16(packet[at + 5]) == id
    }
}

/// DNS_CHECK's query and the answer it takes (keepalived's check_dns: its
/// id, a response, RCODE 0).
enum DNSProbe {
    static func query(id: UInt16, type: UInt16, name: String) -> [UInt8] {
        // Header: id, flags RD, one question; the question: name, type, class IN.
        [UInt8(id >> 8), UInt8(id & 0xFF), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0] + (HealthCheck.dnsName(name) ?? [0])
            + [UInt8(type >> 8), UInt8(type & 0xFF), 0, 1]
    }

    /// Whether `reply` answers query `id` (then its RCODE decides).
    static func answers(_ reply: [UInt8], id: UInt16) -> Bool {
        reply.count >= 12 && UInt16(reply[0]) << 8 | UInt16(reply[1]) == id && reply[2] & 0x80 != 0
    }

    static func rcode(_ reply: [UInt8]) -> Int { Int(reply[3] & 0x0F) }
}
