import LVSConfiguration
import LVSControlProtocol
import LVSDaemon
import LVSSystem
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// lvsd's HTTP port: `/metrics` (Prometheus), `/` (the status page) and
/// `/status.json` (what the page polls). Read-only; on the daemon's event loops.
/// Scrapes share one report for half a second, so that however often they
/// come, the workers' locks are taken at most twice a second.
public final class StatusServer: Service, Sendable {
    let channel: any Channel
    public let address: String

    /// `report` builds a fresh report (it takes the engines' locks briefly).
    public init(host: String, port: Int, group: any EventLoopGroup, logger: Logger, report: @escaping @Sendable () -> StatusReport) throws {
        let cache = ReportCache(build: report)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(StatusHandler(cache: cache, logger: logger))
                }
            }
            .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
        channel = try bootstrap.bind(host: host, port: port).wait()
        address = channel.localAddress.map { "\($0.ipAddress ?? host):\($0.port ?? port)" } ?? "\(host):\(port)"
    }

    /// Serves until graceful shutdown.
    public func run() async throws {
        try? await gracefulShutdown()
        try? await channel.close().get()
    }

    /// `ADDR:PORT`, `[V6]:PORT` or a bare port (loopback).
    public static func parseListen(_ text: String) -> (host: String, port: Int)? {
        if let port = Int(text), (0...65535).contains(port) { return ("127.0.0.1", port) }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }
}

final class ReportCache: Sendable {
    let build: @Sendable () -> StatusReport
    let cached = Mutex<(at: UInt64, report: StatusReport)?>(nil)
    static let maxAgeMilliseconds: UInt64 = 500

    init(build: @escaping @Sendable () -> StatusReport) { self.build = build }

    var report: StatusReport {
        let now = MonotonicClock.milliseconds()
        if let c = cached.withLock({ $0 }), now &- c.at < Self.maxAgeMilliseconds { return c.report }
        let r = build()
        cached.withLock { $0 = (now, r) }
        return r
    }
}

final class StatusHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let cache: ReportCache
    let logger: Logger
    var head: HTTPRequestHead? = nil

    init(cache: ReportCache, logger: Logger) {
        self.cache = cache
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break  // GET and HEAD only: a body is read and ignored
        case .end:
            guard let h = head else { return }
            head = nil
            respond(context, h)
        }
    }

    func respond(_ context: ChannelHandlerContext, _ request: HTTPRequestHead) {
        let (status, type, body) = route(request)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        headers.add(name: "Content-Security-Policy", value: "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    func route(_ request: HTTPRequestHead) -> (HTTPResponseStatus, String, [UInt8]) {
        guard request.method == .GET || request.method == .HEAD else {
            return (.methodNotAllowed, "text/plain; charset=utf-8", Array("GET only\n".utf8))
        }
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        switch path {
        case "/metrics":
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", MetricsExporter.render(cache.report))
        case "/", "/index.html":
            return (.ok, "text/html; charset=utf-8", Array(StatusPage.html.utf8))
        case "/status.json":
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            guard let data = try? encoder.encode(cache.report) else {
                return (.internalServerError, "text/plain; charset=utf-8", Array("cannot encode the status\n".utf8))
            }
            return (.ok, "application/json", Array(data))
        default:
            return (.notFound, "text/plain; charset=utf-8", Array("not found: try /, /metrics or /status.json\n".utf8))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("status: \(error)")
        context.close(promise: nil)
    }
}
