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
        for key in ["NOTIFY_SOCKET", "WATCHDOG_USEC"] { env[key] = Environment.value(key) }
        return env
    }

    /// Sends e.g. "READY=1", "RELOADING=1", "STOPPING=1", "WATCHDOG=1".
    public func notify(_ state: String) {
        guard let path, !path.isEmpty, SocketAddress.unixPathFits(path),
            let socket = try? Socket.open(family: AF_UNIX, type: Socket.datagram)
        else { return }
        defer { socket.close() }
        // A lost notification is systemd's to time out on; lvsd goes on either way.
        _ = try? socket.send(Array(state.utf8), to: .unix(path), dontWait: true)
    }
}
