#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import LVSCore
import LVSPacket
import Logging
import Synchronization
import LVSControlProtocol
import LVSConfiguration
import LVSLinux
import LVSSystem

/// The master and backup sync daemons of one lvsd: a UDP multicast socket
/// each, as `ip_vs_sync.c` opens them (TTL, no loop, no PMTU discovery,
/// bound to the interface). The master sends what the engines queued on
/// every control-plane tick; the backup's thread applies what it receives
/// to every engine.
public final class SyncDaemons: Sendable {
    final class Running: Sendable {
        let stop = Atomic<Bool>(false)
    }

    let engines: [Engine]
    let logger: Logger
    let state = Mutex<(master: (SyncDaemonConfiguration, Int32)?, backup: (SyncDaemonConfiguration, Int32, Running)?)>((nil, nil))
    let stats = Mutex(SyncStatistics())

    init(engines: [Engine], logger: Logger) {
        self.engines = engines
        self.logger = logger
    }

    public var running: [SyncDaemonConfiguration] {
        state.withLock { s in [s.master?.0, s.backup?.0].compactMap { $0 } }
    }

    public var statistics: SyncStatistics {
        var s = stats.withLock { $0 }
        s.recordsLost = engines.reduce(0) { $0 + $1.director.withLock { $0.syncOverflows } }
        return s
    }

    static let alreadyRunning = TableError("EEXIST", "Daemon has already run")
    static let notRunning = TableError("ESRCH", "No daemon is running")

    public func start(_ requested: SyncDaemonConfiguration) throws(TableError) {
        var c = requested
        let index = if_nametoindex(c.interface)
        guard index != 0 else { throw TableError("ENODEV", "No such device") }
        if c.maxLength == 0 { c.maxLength = min(Self.mtu(c.interface) ?? 1500, 1500) - 28 }
        let conf = c
        try state.withLock { (s) throws(TableError) in
            switch conf.role {
            case .master:
                guard s.master == nil else { throw Self.alreadyRunning }
                let fd = try Self.open(conf, index: index, receiving: false)
                s.master = (conf, fd)
                for e in engines { e.director.withLock { $0.setSyncing(true) } }
            case .backup:
                guard s.backup == nil else { throw Self.alreadyRunning }
                let fd = try Self.open(conf, index: index, receiving: true)
                let running = Running()
                s.backup = (conf, fd, running)
                DispatchQueue(label: "lvsd.sync.backup").async { self.receive(fd: fd, configuration: conf, running: running) }
            }
        }
        logger.info("sync daemon started", metadata: ["state": "\(conf.role.rawValue)", "mcast": "\(conf.interface)", "syncid": "\(conf.syncID)",
                                                     "group": "\(conf.group)", "port": "\(conf.port)"])
    }

    public func stop(_ role: SyncDaemonConfiguration.Role) throws(TableError) {
        try state.withLock { (s) throws(TableError) in
            switch role {
            case .master:
                guard let (c, fd) = s.master else { throw Self.notRunning }
                // What is queued still goes out, as the kernel's master thread flushes before it ends.
                flush(fd: fd, configuration: c)
                for e in engines { e.director.withLock { $0.setSyncing(false) } }
                close(fd)
                s.master = nil
            case .backup:
                guard let (_, fd, running) = s.backup else { throw Self.notRunning }
                running.stop.store(true, ordering: .relaxed)
                shutdown(fd, Int32(SHUT_RDWR))
                s.backup = nil
            }
        }
        logger.info("sync daemon stopped", metadata: ["state": "\(role.rawValue)"])
    }

    /// Sends what the engines queued (the master's part of a tick).
    public func flush() {
        state.withLock { s in
            guard let (c, fd) = s.master else { return }
            flush(fd: fd, configuration: c)
        }
    }

    func flush(fd: Int32, configuration c: SyncDaemonConfiguration) {
        var records: [SyncRecord] = []
        for e in engines { e.director.withLock { $0.takeSyncRecords { records.append($0) } } }
        guard !records.isEmpty else { return }
        var sent: UInt64 = 0, failed: UInt64 = 0
        for m in SyncProtocol.encode(records, syncID: c.syncID, maxLength: c.maxLength) {
            if m.withUnsafeBytes({ Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }) == m.count { sent += 1 } else { failed += 1 }
        }
        stats.withLock {
            $0.messagesSent += sent
            $0.recordsSent += UInt64(records.count)
            $0.sendErrors += failed
        }
    }

    func receive(fd: Int32, configuration c: SyncDaemonConfiguration, running: Running) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        defer { close(fd) }
        while !running.stop.load(ordering: .relaxed) {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 200) > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            guard n > 0 else { continue }
            let message = Array(buffer[0..<n])
            let decoded: (syncID: UInt8, records: [SyncRecord], skipped: Int)
            do { decoded = try SyncProtocol.decode(message) } catch {
                let first = stats.withLock { s in defer { s.malformedMessages += 1 }; return s.malformedMessages == 0 }
                if first { logger.warning("sync: malformed message dropped: \(error)") }
                continue
            }
            // A backup with syncid 0 takes every master's messages.
            guard c.syncID == 0 || decoded.syncID == c.syncID else { continue }
            let now = MonotonicClock.milliseconds()
            // Every engine gets every record (any worker may see the flow); the first one's outcomes are counted.
            var applied: UInt64 = 0, rejected = UInt64(decoded.skipped)
            for (k, e) in engines.enumerated() {
                e.director.withLock { d in
                    for r in decoded.records {
                        let outcome = d.applySync(r, now: now)
                        guard k == 0 else { continue }
                        if outcome == .created || outcome == .updated { applied += 1 } else { rejected += 1 }
                    }
                }
            }
            stats.withLock {
                $0.messagesReceived += 1
                $0.recordsApplied += applied
                $0.recordsRejected += rejected
            }
        }
    }

    static func mtu(_ interface: String) -> Int? {
        KernelFile.firstLine("/sys/class/net/\(interface)/mtu").flatMap { Int($0) }
    }

    /// The daemon's socket: the master's connected to the group, the
    /// backup's bound to it and joined on the interface.
    static func open(_ c: SyncDaemonConfiguration, index: UInt32, receiving: Bool) throws(TableError) -> Int32 {
        let v6 = c.group.isIPv6
        let fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TableError("EIO", "socket: \(String(cString: strerror(errno)))") }
        func check(_ rc: Int32, _ what: String) throws(TableError) {
            guard rc == 0 else {
                let e = errno
                close(fd)
                throw TableError("EIO", "sync daemon \(what): \(String(cString: strerror(e)))")
            }
        }
        func set<T>(_ level: Int32, _ name: Int32, _ value: T) -> Int32 {
            var v = value
            return setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<T>.size))
        }
        try check(set(SOL_SOCKET, SO_REUSEADDR, Int32(1)), "SO_REUSEADDR")
        let name = Array(c.interface.utf8CString)
        try check(name.withUnsafeBufferPointer { setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, $0.baseAddress, socklen_t($0.count)) }, "SO_BINDTODEVICE")
        var storage = sockaddr_storage()
        let length: socklen_t
        switch c.group {
        case .v4(let g):
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = c.port.bigEndian
            a.sin_addr.s_addr = g.value.bigEndian
            withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: src) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            var mreq = ip_mreqn()
            mreq.imr_multiaddr.s_addr = g.value.bigEndian
            mreq.imr_ifindex = Int32(index)
            if receiving {
                try check(set(Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, mreq), "IP_ADD_MEMBERSHIP")
            } else {
                try check(set(Int32(IPPROTO_IP), IP_MULTICAST_IF, mreq), "IP_MULTICAST_IF")
                try check(set(Int32(IPPROTO_IP), IP_MULTICAST_TTL, Int32(c.ttl)), "IP_MULTICAST_TTL")
                try check(set(Int32(IPPROTO_IP), IP_MULTICAST_LOOP, Int32(0)), "IP_MULTICAST_LOOP")
                try check(set(Int32(IPPROTO_IP), IP_MTU_DISCOVER, Int32(IP_PMTUDISC_DONT)), "IP_MTU_DISCOVER")
            }
        case .v6(let g):
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = c.port.bigEndian
            let bytes = IPAddress.v6(g).bytes
            withUnsafeMutableBytes(of: &a.sin6_addr) { for k in 0..<16 { $0[k] = bytes[k] } }
            a.sin6_scope_id = index
            withUnsafeBytes(of: a) { src in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: src) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            if receiving {
                var mreq = ipv6_mreq()
                mreq.ipv6mr_multiaddr = a.sin6_addr
                mreq.ipv6mr_interface = index
                try check(set(Int32(IPPROTO_IPV6), IPV6_ADD_MEMBERSHIP, mreq), "IPV6_ADD_MEMBERSHIP")
            } else {
                try check(set(Int32(IPPROTO_IPV6), IPV6_MULTICAST_IF, Int32(index)), "IPV6_MULTICAST_IF")
                try check(set(Int32(IPPROTO_IPV6), IPV6_MULTICAST_HOPS, Int32(c.ttl)), "IPV6_MULTICAST_HOPS")
                try check(set(Int32(IPPROTO_IPV6), IPV6_MULTICAST_LOOP, Int32(0)), "IPV6_MULTICAST_LOOP")
                try check(set(Int32(IPPROTO_IPV6), IPV6_MTU_DISCOVER, Int32(IPV6_PMTUDISC_DONT)), "IPV6_MTU_DISCOVER")
            }
        }
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { receiving ? bind(fd, $0, length) : connect(fd, $0, length) }
        }
        try check(rc, receiving ? "bind" : "connect")
        return fd
    }
}
