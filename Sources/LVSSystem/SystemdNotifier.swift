#if canImport(Glibc)
import Glibc
#endif

/// sd_notify(3) without libsystemd: one datagram per state to the socket
/// systemd names in NOTIFY_SOCKET (a path, or an abstract name after '@').
/// Outside systemd (no NOTIFY_SOCKET) every call does nothing.
public struct SystemdNotifier: Sendable {
    let path: String?
    /// Half the watchdog interval systemd asked for, in milliseconds.
    public let watchdogInterval: UInt64?

    public init(environment: [String: String] = SystemdNotifier.processEnvironment()) {
        path = environment["NOTIFY_SOCKET"]
        watchdogInterval = environment["WATCHDOG_USEC"].flatMap(UInt64.init).map { $0 / 2000 }
    }

    public static func processEnvironment() -> [String: String] {
        var env: [String: String] = [:]
        for key in ["NOTIFY_SOCKET", "WATCHDOG_USEC"] {
            if let v = unsafe getenv(key) { env[key] = unsafe String(cString: v) }
        }
        return env
    }

    /// Sends e.g. "READY=1", "RELOADING=1", "STOPPING=1", "WATCHDOG=1".
    public func notify(_ state: String) {
        guard let path, !path.isEmpty else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }  // abstract namespace
        let length = min(bytes.count, MemoryLayout.size(ofValue: addr.sun_path) - 1)
        unsafe withUnsafeMutableBytes(of: &addr.sun_path) { raw in for i in 0..<length { unsafe raw[i] = bytes[i] } }
        let size = socklen_t(MemoryLayout<sa_family_t>.size + length)
        var message = state
        message.withUTF8 { m in
            _ = unsafe withUnsafePointer(to: &addr) {
                unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe sendto(fd, m.baseAddress, m.count, Int32(MSG_NOSIGNAL), $0, size) }
            }
        }
    }
}
