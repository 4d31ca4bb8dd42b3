import LVSConfiguration
import LVSControlProtocol
import LVSSystem
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// lvsd's control socket: owner-only (mode 0600, and the peer's uid checked),
/// served on the daemon's event loops; each request is answered on NIO's
/// thread pool, since answering takes the engines' locks and may read
/// files. A client that sends garbage, too much, or nothing gets an error
/// or is dropped after 5 s; the server keeps serving.
public final class ControlServer: Service, Sendable {
    public let path: String
    let channel: any Channel

    /// Binds `path` with mode 0600 and starts serving. A stale socket (nobody
    /// listening) is replaced; a live one means another lvsd runs: an error.
    public init(path: String, group: any EventLoopGroup, logger: Logger, handle: @escaping @Sendable ([UInt8]) -> [UInt8]) throws(SystemError) {
        if (try? ControlConnection.connect(path: path, timeoutSeconds: 1)) != nil {
            throw SystemError("bind \(path): another lvsd is serving it", .addressInUse)
        }
        guard SocketAddress.unixPathFits(path) else { throw SystemError("socket path \(path)", .fileNameTooLong) }
        FileSystem.remove(path)
        let listener = try Socket.open(family: AF_UNIX, type: Socket.stream, nonBlocking: true)
        do {
            // Created owner-only, so that nobody else can connect in the moment before chmod.
            try FileSystem.withCreationMask(0o177) { () throws(SystemError) in try listener.bind(.unix(path)) }
            try FileSystem.setPermissions(path, 0o600)
            try listener.listen(backlog: 16)
        } catch {
            listener.close()
            throw error
        }
        let me = geteuid()
        do {
            channel = try ServerBootstrap(group: group)
                .childChannelInitializer { child in
                    child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: .seconds(5)))
                        try child.pipeline.syncOperations.addHandler(ByteToMessageHandler(ControlMessageDecoder(limit: ControlProtocol.maxRequest)))
                        try child.pipeline.syncOperations.addHandler(ControlRequestHandler(owner: me, logger: logger, handle: handle))
                    }
                }
                .withBoundSocket(listener.rawValue).wait()
        } catch {
            listener.close()
            throw SystemError("serve \(path): \(error)", .ioError)
        }
        self.path = path
    }

    /// Serves until graceful shutdown, then closes the socket and removes its path.
    public func run() async throws {
        try? await gracefulShutdown()
        try? await channel.close().get()
        FileSystem.remove(path)
    }
}

/// One length-prefixed message body.
struct ControlMessageDecoder: ByteToMessageDecoder {
    typealias InboundOut = Result<[UInt8], ControlConnection.Failure>
    let limit: Int

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let header = buffer.getBytes(at: buffer.readerIndex, length: 4) else { return .needMoreData }
        let n = ControlProtocol.length(of: header)
        guard n <= limit else {
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            context.fireChannelRead(wrapInboundOut(.failure(.tooLarge(n))))
            return .continue
        }
        guard buffer.readableBytes >= 4 + n else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 4)
        context.fireChannelRead(wrapInboundOut(.success(buffer.readBytes(length: n)!)))
        return .continue
    }
}

/// Checks who connected, answers one request, closes.
final class ControlRequestHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = Result<[UInt8], ControlConnection.Failure>
    typealias OutboundOut = ByteBuffer
    let owner: uid_t
    let logger: Logger
    let handle: @Sendable ([UInt8]) -> [UInt8]

    init(owner: uid_t, logger: Logger, handle: @escaping @Sendable ([UInt8]) -> [UInt8]) {
        self.owner = owner
        self.logger = logger
        self.handle = handle
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let channel = context.channel
        let loop = context.eventLoop
        let handle = handle
        let logger = logger
        let owner = owner
        let request = unwrapInboundIn(data)
        // The socket's mode keeps others out; this also holds if someone loosens it.
        let credentials =
            (channel as? any SocketOptionProvider)?.unsafeGetSocketOption(
                level: .socket, name: NIOBSDSocket.Option(rawValue: SO_PEERCRED)) as EventLoopFuture<PeerCredentials>?
        (credentials ?? loop.makeSucceededFuture(PeerCredentials(pid: 0, uid: owner, gid: 0))).flatMap { peer -> EventLoopFuture<[UInt8]?> in
            guard peer.uid == 0 || peer.uid == owner else {
                logger.warning("control: refused a client of uid \(peer.uid)")
                return loop.makeSucceededFuture(nil)
            }
            switch request {
            case .success(let bytes):
                return NIOThreadPool.singleton.runIfActive(eventLoop: loop) { handle(bytes) }.map { $0 }
            case .failure(let failure):
                logger.notice("control: refused a \(failure)")
                let reply = try? ControlProtocol.encode(ControlResponse.failed(TableError("EMSGSIZE", "control message too large")))
                return loop.makeSucceededFuture(reply)
            }
        }.whenComplete { result in
            if case .success(let reply?) = result {
                channel.writeAndFlush(ByteBuffer(bytes: reply)).whenComplete { _ in channel.close(promise: nil) }
            } else {
                channel.close(promise: nil)
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.notice("control: \(error)")
        context.close(promise: nil)
    }
}

/// `struct ucred`, which Glibc's module hides behind _GNU_SOURCE.
struct PeerCredentials: Sendable {
    var pid: pid_t
    var uid: uid_t
    var gid: gid_t
}
