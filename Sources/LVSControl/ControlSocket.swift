#if canImport(Glibc)
import Glibc
#endif
import CLVSLinux
import Logging

/// A connected Unix stream socket carrying length-prefixed messages.
public struct ControlConnection: ~Copyable {
    let fd: Int32

    init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case system(String, Int32)
        case closed
        case tooLarge(Int)
        public var description: String {
            switch self {
            case .system(let call, let e): "\(call): \(String(cString: strerror(e)))"
            case .closed: "connection closed"
            case .tooLarge(let n): "message of \(n) bytes is over the limit"
            }
        }
    }

    /// Connects to lvsd's socket.
    public static func connect(path: String, timeoutSeconds: Int = 30) throws(Failure) -> ControlConnection {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system("socket", errno) }
        let c = ControlConnection(fd: fd)
        c.setTimeout(seconds: timeoutSeconds)
        var addr = try Self.address(path)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { throw .system("connect", errno) }
        return c
    }

    static func address(_ path: String) throws(Failure) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw .system("socket path", ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        return addr
    }

    func setTimeout(seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The peer's user id (SO_PEERCRED).
    var peerUID: uid_t? {
        let uid = lvs_peer_uid(fd)
        return uid < 0 ? nil : uid_t(uid)
    }

    public func send(_ bytes: [UInt8]) throws(Failure) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .system("send", errno)
            }
            offset += n
        }
    }

    func receive(exactly count: Int) throws(Failure) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + offset, count - offset, 0) }
            if n == 0 { throw .closed }
            if n < 0 {
                if errno == EINTR { continue }
                throw .system("recv", errno)
            }
            offset += n
        }
        return out
    }

    /// One message body, refusing anything over `limit` bytes.
    public func receiveMessage(limit: Int) throws(Failure) -> [UInt8] {
        let h = try receive(exactly: 4)
        let n = Int(h[0]) << 24 | Int(h[1]) << 16 | Int(h[2]) << 8 | Int(h[3])
        guard n <= limit else { throw .tooLarge(n) }
        return try receive(exactly: n)
    }
}

/// lvsd's control socket: owner-only, one client at a time on its own
/// thread (control traffic is a few messages per command). A client that
/// sends garbage, too much, or nothing gets an error or a timeout; the
/// server keeps serving.
public final class ControlServer: @unchecked Sendable {
    let fd: Int32
    public let path: String
    let handle: @Sendable ([UInt8]) -> [UInt8]
    let logger: Logger
    var thread: pthread_t? = nil

    /// Binds `path` with mode 0600. A stale socket (nobody listening) is
    /// replaced; a live one means another lvsd runs, and that is an error.
    public init(path: String, logger: Logger, handle: @escaping @Sendable ([UInt8]) -> [UInt8]) throws(ControlConnection.Failure) {
        if (try? ControlConnection.connect(path: path, timeoutSeconds: 1)) != nil {
            throw .system("bind \(path): another lvsd is serving it", EADDRINUSE)
        }
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system("socket", errno) }
        var addr = try ControlConnection.address(path)
        let old = umask(0o177)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(old)
        guard rc == 0 else { let e = errno; close(fd); throw .system("bind \(path)", e) }
        chmod(path, 0o600)
        guard listen(fd, 16) == 0 else { let e = errno; close(fd); throw .system("listen", e) }
        self.fd = fd
        self.path = path
        self.logger = logger
        self.handle = handle
    }

    /// Serves on a thread of its own until `stop`.
    public func start() {
        let box = Unmanaged.passRetained(self)
        var t = pthread_t()
        pthread_create(&t, nil, { arg in
            let server = Unmanaged<ControlServer>.fromOpaque(arg!).takeRetainedValue()
            server.serve()
            return nil
        }, box.toOpaque())
        thread = t
    }

    func serve() {
        while true {
            let client = lvs_accept_cloexec(fd)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return  // closed by stop()
            }
            let c = ControlConnection(fd: client)
            c.setTimeout(seconds: 5)
            // The socket's mode keeps others out; this also holds if someone loosens it.
            if let uid = c.peerUID, uid != 0 && uid != geteuid() {
                logger.warning("control: refused a client of uid \(uid)")
                continue
            }
            do {
                let request = try c.receiveMessage(limit: ControlProtocol.maxRequest)
                try c.send(handle(request))
            } catch ControlConnection.Failure.tooLarge(let n) {
                logger.notice("control: refused a message of \(n) bytes")
                if let reply = try? ControlProtocol.encode(ControlResponse.failed(TableError("EMSGSIZE", "control message too large"))) {
                    try? c.send(reply)
                }
            } catch {
                logger.notice("control: \(error)")
            }
        }
    }

    public func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        if let thread { pthread_join(thread, nil) }
        unlink(path)
    }
}
