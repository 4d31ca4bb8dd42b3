import LVSSystem

#if canImport(Glibc)
import Glibc
#endif

/// One end of lvsd's control socket (a Unix stream socket) carrying
/// length-prefixed messages; closed when it goes.
public struct ControlConnection: ~Copyable {
    public let socket: Socket

    public init(_ socket: Socket) { self.socket = socket }

    deinit { socket.close() }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case system(SystemError)
        case closed
        case tooLarge(Int)
        public var description: String {
            switch self {
            case .system(let e): e.description
            case .closed: "connection closed"
            case .tooLarge(let n): "message of \(n) bytes is over the limit"
            }
        }
    }

    /// Connects to lvsd's socket.
    public static func connect(path: String, timeoutSeconds: Int = 30) throws(Failure) -> ControlConnection {
        guard SocketAddress.unixPathFits(path) else { throw .system(SystemError("socket path \(path)", .fileNameTooLong)) }
        do {
            let c = ControlConnection(try Socket.open(family: AF_UNIX, type: Socket.stream))
            try c.socket.setTimeouts(seconds: timeoutSeconds)
            try c.socket.connect(.unix(path))
            return c
        } catch {
            throw .system(error)
        }
    }

    public func send(_ bytes: [UInt8]) throws(Failure) {
        do { try socket.sendAll(bytes) } catch { throw .system(error) }
    }

    func receive(exactly count: Int) throws(Failure) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var chunk = [UInt8](repeating: 0, count: min(count, 1 << 16))
        while out.count < count {
            if chunk.count > count - out.count { chunk = [UInt8](repeating: 0, count: count - out.count) }
            let n: Int?
            do { n = try socket.receive(into: &chunk) } catch { throw .system(error) }
            guard let n else { throw .system(SystemError("recv", .timedOut)) }
            if n == 0 { throw .closed }
            out += chunk[0..<n]
        }
        return out
    }

    /// One message body, refusing anything over `limit` bytes.
    public func receiveMessage(limit: Int) throws(Failure) -> [UInt8] {
        let n = try ControlProtocol.length(of: receive(exactly: 4))
        guard n <= limit else { throw .tooLarge(n) }
        return try receive(exactly: n)
    }
}
