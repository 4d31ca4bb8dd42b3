import Crypto
import LVSPacket
import LVSSystem
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Why a check failed, as `lvsadm -L --health` shows it.
struct ProbeFailure: Error, CustomStringConvertible {
    var description: String
}

/// HTTP_GET's and SSL_GET's exchange: one HTTP/1.0 request, the whole
/// answer read until the server closes.
enum HTTPProbe {
    static let limit = 1 << 20

    /// The request; `Host:` is the virtual host, else the address.
    static func request(_ address: IPAddress, path: String, host virtualhost: String? = nil) -> [UInt8] {
        let host = virtualhost ?? (address.isIPv6 ? "[\(address)]" : "\(address)")
        return Array("GET \(path) HTTP/1.0\r\nHost: \(host)\r\nUser-Agent: lvsd-healthcheck\r\nConnection: close\r\n\r\n".utf8)
    }

    static func parse(_ reply: [UInt8]) -> Result<(status: Int, body: [UInt8]), ProbeFailure> {
        let line = String(decoding: reply.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let status = Int(parts[1]) else {
            return .failure(ProbeFailure(description: reply.isEmpty ? "empty answer" : "not HTTP: \(line.prefix(40))"))
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

/// A check's connection: a TCP connect within the connect timeout, then,
/// for HTTP_GET and SSL_GET (TLS without certificate verification, as
/// keepalived: it checks that the server answers, not who it is), one
/// request and its answer within the same time.
enum Probe {
    static let tls: NIOSSLContext? = {
        var c = TLSConfiguration.makeClientConfiguration()
        c.certificateVerification = .none
        return try? NIOSSLContext(configuration: c)
    }()

    /// Connects; with a request, sends it and returns everything the server
    /// says before it closes (a TCP check returns nothing once connected).
    static func exchange(
        _ address: IPAddress, _ port: UInt16, request: [UInt8]?, tls useTLS: Bool, timeout: Double,
        group: any EventLoopGroup, preamble: [UInt8] = [], serverName: String? = nil, dialog: SMTPDialog? = nil
    ) async -> Result<[UInt8], ProbeFailure> {
        let milliseconds = Int64(max(0.1, timeout) * 1000)
        let loop = group.next()
        let outcome = Outcome(loop.makePromise(of: [UInt8].self))
        // NIO traps on a promise never settled; a failed connect or a TCP check never reads one.
        defer { outcome.fail(ProbeFailure(description: "abandoned")) }
        let channel: any Channel
        do {
            let to = try SocketAddress(ipAddress: "\(address)", port: Int(port))
            let context = useTLS ? tls : nil
            if useTLS && context == nil { return .failure(ProbeFailure(description: "no TLS context")) }
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(.milliseconds(milliseconds))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // Nearest the socket: a PROXY header goes out before TLS begins.
                        if !preamble.isEmpty { try channel.pipeline.syncOperations.addHandler(Preamble(preamble)) }
                        if let context { try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverName)) }
                        if let dialog { try channel.pipeline.syncOperations.addHandler(SMTPDialog.Handler(dialog)) }
                        try channel.pipeline.syncOperations.addHandler(Collector(outcome))
                    }
                }
                .connect(to: to).get()
        } catch let e as ChannelError {
            if case .connectTimeout = e { return .failure(ProbeFailure(description: "connect: timed out")) }
            return .failure(ProbeFailure(description: "connect: \(e)"))
        } catch let e as IOError {
            return .failure(ProbeFailure(description: SystemError("connect", errno: e.errnoCode).description))
        } catch {
            return .failure(ProbeFailure(description: "connect: \(error)"))
        }
        guard let request else {
            channel.close(promise: nil)
            return .success([])
        }
        let deadline = loop.scheduleTask(in: .milliseconds(milliseconds)) {
            outcome.fail(ProbeFailure(description: "no complete answer within \(timeout) s"))
            channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        channel.writeAndFlush(ByteBuffer(bytes: request), promise: nil)
        do {
            return .success(try await outcome.promise.futureResult.get())
        } catch let e as ProbeFailure {
            return .failure(e)
        } catch {
            return .failure(ProbeFailure(description: "\(error)"))
        }
    }

    /// The exchange's result, settled once by whoever comes first: the end of
    /// the answer, an error, or the deadline.
    final class Outcome: Sendable {
        let promise: EventLoopPromise<[UInt8]>
        let settled = Atomic<Bool>(false)
        init(_ promise: EventLoopPromise<[UInt8]>) { self.promise = promise }
        func succeed(_ bytes: [UInt8]) { if !settled.exchange(true, ordering: .acquiringAndReleasing) { promise.succeed(bytes) } }
        func fail(_ error: any Error) { if !settled.exchange(true, ordering: .acquiringAndReleasing) { promise.fail(error) } }
    }

    /// Writes its bytes as the connection opens, before anything above it.
    final class Preamble: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let bytes: [UInt8]
        init(_ bytes: [UInt8]) { self.bytes = bytes }
        func channelActive(context: ChannelHandlerContext) {
            context.writeAndFlush(NIOAny(ByteBuffer(bytes: bytes)), promise: nil)
            context.fireChannelActive()
        }
    }

    /// Collects the answer until the server closes (at most `HTTPProbe.limit` bytes).
    final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let outcome: Outcome
        var bytes: [UInt8] = []
        init(_ outcome: Outcome) { self.outcome = outcome }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            if bytes.count < HTTPProbe.limit, let more = b.readBytes(length: b.readableBytes) { bytes += more }
        }
        func channelInactive(context: ChannelHandlerContext) { outcome.succeed(bytes) }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // A server closing without close_notify still said all it had to say.
            if let e = error as? NIOSSLError, case .uncleanShutdown = e, !bytes.isEmpty {
                outcome.succeed(bytes)
            } else {
                outcome.fail(ProbeFailure(description: "\(error)"))
            }
            context.close(promise: nil)
        }
    }
}
