import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import LVSPacket
import Logging
import Synchronization
import LVSDaemon
import LVSConfiguration
import LVSSystem

/// keepalived's checkers, run by lvsd: each checked real server on its own
/// schedule (`delay_loop`), at most `concurrency` checks at a time, on
/// threads of their own (never the data plane's). Verdicts go to the control
/// plane, which takes a failed server out of its services or sets its weight
/// to 0 (`inhibit_on_failure`), and puts it back when it passes again.
public final class HealthMonitor: Sendable {
    let plane: ControlPlane
    public let targets: [HealthTarget]
    let logger: Logger
    let queue = DispatchQueue(label: "lvsd.health", attributes: .concurrent)
    let slots: DispatchSemaphore
    let stopped = Atomic<Bool>(false)
    /// Each server's last verdict: for notify_up / notify_down, for retries,
    /// and for the monitor that replaces this one on a reload.
    let last = Mutex<[String: Verdict]>([:])

    public init(plane: ControlPlane, targets: [HealthTarget], logger: Logger, concurrency: Int = 16) {
        self.plane = plane
        self.targets = targets
        self.logger = logger
        slots = DispatchSemaphore(value: concurrency)
    }

    /// Starts every checker. A server `previous` (the monitor this one
    /// replaces on a reload) found down stays down until a check passes, so
    /// that a reload never puts a failed server back into rotation.
    public func start(after previous: HealthMonitor? = nil) {
        let before = previous?.last.withLock { $0 } ?? [:]
        for t in targets {
            if let v = before[t.id] {
                last.withLock { $0[t.id] = v }
                if !v.up { plane.healthChanged(t, up: false, detail: v.detail) }
            } else if t.startsDown {
                report(t, Verdict(up: false, detail: "alpha: down until a check passes"))
            }
            schedule(t, after: Double.random(in: 0...max(0, t.checks.map(\.warmup).max() ?? 0)))
        }
        if !targets.isEmpty { logger.info("health checks running", metadata: ["servers": "\(targets.count)"]) }
    }

    /// No verdict is reported after this returns; checks under way finish on their own.
    public func stop() { stopped.store(true, ordering: .sequentiallyConsistent) }

    /// lvsd is stopping: with keepalived's `omega`, the `notify_down` of
    /// every server that is up runs now (each within 10 s).
    public func runOmegaNotifiers() {
        let seen = last.withLock { $0 }
        for t in targets where t.omega && seen[t.id]?.up != false {
            if let command = t.notifyDown { _ = ShellCommand.run(command, timeout: 10) }
        }
    }

    func schedule(_ t: HealthTarget, after seconds: Double) {
        queue.asyncAfter(deadline: .now() + seconds) { [self] in
            guard !stopped.load(ordering: .sequentiallyConsistent) else { return }
            slots.wait()
            let verdict = Self.check(t, wasUp: last.withLock { $0[t.id]?.up })
            slots.signal()
            guard !stopped.load(ordering: .sequentiallyConsistent) else { return }
            report(t, verdict)
            schedule(t, after: t.checks.map(\.delayLoop).min() ?? 60)
        }
    }

    func report(_ t: HealthTarget, _ v: Verdict) {
        plane.healthChanged(t, up: v.up, weight: v.weight, detail: v.detail)
        let changed = last.withLock { seen in
            defer { seen[t.id] = v }
            return seen[t.id].map { $0.up != v.up } ?? !v.up
        }
        guard changed, let command = v.up ? t.notifyUp : t.notifyDown else { return }
        ShellCommand.spawn(command)
    }

    public struct Verdict: Sendable, Equatable {
        public var up: Bool
        public var weight: Int32?
        public var detail: String
    }

    /// Every checker of the server: up when all pass. As keepalived, a server
    /// that is up (or not checked yet) gets `retry` more tries before it is
    /// down; one that is down gets one.
    public static func check(_ t: HealthTarget, wasUp: Bool?) -> Verdict {
        var weight: Int32? = nil
        for c in t.checks {
            var last = Verdict(up: false, detail: "")
            for attempt in 0...(wasUp ?? true ? c.retry : 0) {
                if attempt > 0 && c.delayBeforeRetry > 0 { usleep(UInt32(min(c.delayBeforeRetry, 60) * 1_000_000)) }
                last = run(c, address: c.connectAddress ?? t.server.address, port: c.connectPort ?? t.server.port)
                if last.up { break }
            }
            guard last.up else { return Verdict(up: false, detail: "\(c.kind.name): \(last.detail)") }
            if let w = last.weight { weight = w }
        }
        return Verdict(up: true, weight: weight, detail: "")
    }

    static func run(_ c: HealthCheck, address: IPAddress, port: UInt16) -> Verdict {
        switch c.kind {
        case .tcp:
            switch TCPProbe.connect(address, port, timeout: c.connectTimeout) {
            case .success(let fd): close(fd); return Verdict(up: true, detail: "")
            case .failure(let e): return Verdict(up: false, detail: e.description)
            }
        case .http(let urls, let tls):
            for u in urls {
                let request = HTTPProbe.request(address, path: u.path)
                let reply = tls ? TLSProbe.exchange(address, port, request: request, timeout: c.connectTimeout)
                                : TCPProbe.exchange(address, port, request: request, timeout: c.connectTimeout)
                switch reply.flatMap(HTTPProbe.parse) {
                case .success(let r) where !u.accepts(r.status):
                    return Verdict(up: false, detail: "\(u.path): status \(r.status), expected \(u.statuses.map { $0.count == 1 ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" }.joined(separator: ","))")
                case .success(let r):
                    if let digest = u.digest, HTTPProbe.md5(r.body) != digest {
                        return Verdict(up: false, detail: "\(u.path): digest \(HTTPProbe.md5(r.body)), expected \(digest)")
                    }
                case .failure(let e): return Verdict(up: false, detail: "\(u.path): \(e.description)")
                }
            }
            return Verdict(up: true, detail: "")
        case .misc(let command, let timeout, let dynamic):
            guard let rc = ShellCommand.run(command, timeout: timeout) else { return Verdict(up: false, detail: "timed out after \(timeout) s") }
            if rc == 0 { return Verdict(up: true, detail: "") }
            if rc >= 2 && dynamic { return Verdict(up: true, weight: Int32(rc - 2), detail: "") }
            return Verdict(up: false, detail: "exit status \(rc)")
        }
    }
}

/// A connect with a deadline, and a one-request HTTP/1.0 exchange.
enum TCPProbe {
    struct Failure: Error, CustomStringConvertible { var description: String }

    static func connect(_ address: IPAddress, _ port: UInt16, timeout: Double) -> Result<Int32, Failure> {
        let family = address.isIPv6 ? AF_INET6 : AF_INET
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(Failure(description: "socket: \(String(cString: strerror(errno)))")) }
        var rc: Int32
        switch address {
        case .v4(let a):
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = port.bigEndian
            sa.sin_addr.s_addr = a.value.bigEndian
            rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        case .v6(let a):
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sa.sin6_addr) { b in
                for k in 0..<8 { b[k] = UInt8(truncatingIfNeeded: a.high >> (56 - 8 * UInt64(k))); b[8 + k] = UInt8(truncatingIfNeeded: a.low >> (56 - 8 * UInt64(k))) }
            }
            rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        }
        if rc != 0 && errno != EINPROGRESS {
            let e = errno
            close(fd)
            return .failure(Failure(description: "connect: \(String(cString: strerror(e)))"))
        }
        if rc != 0 {
            guard wait(fd, events: Int16(POLLOUT), timeout: timeout) else { close(fd); return .failure(Failure(description: "connect: timed out")) }
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 { close(fd); return .failure(Failure(description: "connect: \(String(cString: strerror(err)))")) }
        }
        return .success(fd)
    }

    static func wait(_ fd: Int32, events: Int16, timeout: Double) -> Bool {
        var p = pollfd(fd: fd, events: events, revents: 0)
        let n = poll(&p, 1, Int32(max(1, timeout * 1000)))
        return n == 1 && p.revents & events != 0
    }

    /// Sends `request` and reads until the server closes (at most 1 MiB),
    /// within `timeout` for the whole exchange.
    static func exchange(_ address: IPAddress, _ port: UInt16, request: [UInt8], timeout: Double) -> Result<[UInt8], Failure> {
        let started = Date()
        let fd: Int32
        switch connect(address, port, timeout: timeout) {
        case .success(let s): fd = s
        case .failure(let e): return .failure(e)
        }
        defer { close(fd) }
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == request.count else { return .failure(Failure(description: "send: \(String(cString: strerror(errno)))")) }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while reply.count < HTTPProbe.limit {
            let left = timeout - Date().timeIntervalSince(started)
            guard left > 0, wait(fd, events: Int16(POLLIN), timeout: left) else {
                return .failure(Failure(description: reply.isEmpty ? "no answer within \(timeout) s" : "answer not finished within \(timeout) s"))
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            reply += chunk[0..<n]
        }
        return .success(reply)
    }
}
