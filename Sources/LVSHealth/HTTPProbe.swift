import Crypto
import Dispatch
import LVSPacket
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import LVSDaemon
import LVSConfiguration
import LVSSystem

/// HTTP_GET's and SSL_GET's exchange: one HTTP/1.0 request, the whole
/// answer read until the server closes.
enum HTTPProbe {
    static let limit = 1 << 20

    static func request(_ address: IPAddress, path: String) -> [UInt8] {
        let host = address.isIPv6 ? "[\(address)]" : "\(address)"
        return Array("GET \(path) HTTP/1.0\r\nHost: \(host)\r\nUser-Agent: lvsd-healthcheck\r\nConnection: close\r\n\r\n".utf8)
    }

    static func parse(_ reply: [UInt8]) -> Result<(status: Int, body: [UInt8]), TCPProbe.Failure> {
        let line = String(decoding: reply.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let status = Int(parts[1]) else {
            return .failure(TCPProbe.Failure(description: reply.isEmpty ? "empty answer" : "not HTTP: \(line.prefix(40))"))
        }
        var body: [UInt8] = []
        for i in reply.indices.dropLast(3) where reply[i] == 13 && reply[i + 1] == 10 && reply[i + 2] == 13 && reply[i + 3] == 10 {
            body = Array(reply[(i + 4)...])
            break
        }
        return .success((status, body))
    }

    /// What keepalived's genhash prints for a body.
    static func md5(_ body: [UInt8]) -> String {
        Insecure.MD5.hash(data: body).map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }
}

/// SSL_GET's transport: TLS without certificate verification (keepalived
/// checks that the server answers, not who it is), on one event-loop thread
/// shared by every check.
enum TLSProbe {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    static let context: NIOSSLContext? = {
        var c = TLSConfiguration.makeClientConfiguration()
        c.certificateVerification = .none
        return try? NIOSSLContext(configuration: c)
    }()

    /// The exchange's result, settled once whoever comes first: the end of
    /// the answer, an error, or the deadline.
    final class Outcome: Sendable {
        let promise: EventLoopPromise<[UInt8]>
        let settled = Atomic<Bool>(false)
        init(_ promise: EventLoopPromise<[UInt8]>) { self.promise = promise }
        func succeed(_ bytes: [UInt8]) { if !settled.exchange(true, ordering: .acquiringAndReleasing) { promise.succeed(bytes) } }
        func fail(_ error: Error) { if !settled.exchange(true, ordering: .acquiringAndReleasing) { promise.fail(error) } }
    }

    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let outcome: Outcome
        var bytes: [UInt8] = []
        init(_ outcome: Outcome) { self.outcome = outcome }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            if bytes.count < HTTPProbe.limit, let more = b.readBytes(length: b.readableBytes) { bytes += more }
        }
        func channelInactive(context: ChannelHandlerContext) { outcome.succeed(bytes) }
        func errorCaught(context: ChannelHandlerContext, error: Error) {
            // A server closing without close_notify still said all it had to say.
            if let e = error as? NIOSSLError, case .uncleanShutdown = e, !bytes.isEmpty { outcome.succeed(bytes) } else { outcome.fail(error) }
            context.close(promise: nil)
        }
    }

    static func exchange(_ address: IPAddress, _ port: UInt16, request: [UInt8], timeout: Double) -> Result<[UInt8], TCPProbe.Failure> {
        guard let context else { return .failure(TCPProbe.Failure(description: "no TLS context")) }
        let loop = group.next()
        let promise = loop.makePromise(of: [UInt8].self)
        let outcome = Outcome(promise)
        let milliseconds = Int64(max(0.1, timeout) * 1000)
        do {
            let address = try SocketAddress(ipAddress: "\(address)", port: Int(port))
            let channel = try ClientBootstrap(group: loop)
                .connectTimeout(.milliseconds(milliseconds))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                        try channel.pipeline.syncOperations.addHandler(Collector(outcome))
                    }
                }
                .connect(to: address).wait()
            let deadline = loop.scheduleTask(in: .milliseconds(milliseconds)) {
                outcome.fail(TCPProbe.Failure(description: "no complete answer within \(timeout) s"))
                channel.close(promise: nil)
            }
            channel.writeAndFlush(ByteBuffer(bytes: request), promise: nil)
            defer { deadline.cancel() }
            return .success(try promise.futureResult.wait())
        } catch let e as TCPProbe.Failure {
            return .failure(e)
        } catch {
            outcome.fail(error)
            return .failure(TCPProbe.Failure(description: "\(error)"))
        }
    }
}
