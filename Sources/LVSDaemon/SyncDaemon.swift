import LVSConfiguration
import LVSControlProtocol
import LVSCore
import LVSLinux
import LVSPacket
import LVSSystem
import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The master and backup sync daemons of one lvsd: a UDP multicast socket
/// each, as `ip_vs_sync.c` opens them (TTL, no loop, no PMTU discovery,
/// bound to the interface). The master sends what the engines queued on
/// every control-plane tick; the backup's socket is a SwiftNIO channel on
/// the daemon's event loops, whose messages go to every engine.
public final class SyncDaemons: Sendable {
    let engines: [Engine]
    let group: any EventLoopGroup
    let logger: Logger
    let state = Mutex<(master: (SyncDaemonConfiguration, Socket)?, backup: (SyncDaemonConfiguration, EventLoopFuture<any Channel>)?)>((nil, nil))
    let stats = Mutex(SyncStatistics())

    init(engines: [Engine], group: any EventLoopGroup, logger: Logger) {
        self.engines = engines
        self.group = group
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
        guard let index = NetworkInterface.index(named: c.interface) else { throw TableError("ENODEV", "No such device") }
        if c.maxLength == 0 { c.maxLength = min(Self.mtu(c.interface) ?? 1500, 1500) - 28 }
        let conf = c
        try state.withLock { (s) throws(TableError) in
            switch conf.role {
            case .master:
                guard s.master == nil else { throw Self.alreadyRunning }
                s.master = (conf, try Self.open(conf, index: index, receiving: false))
                for e in engines { e.director.withLock { $0.setSyncing(true) } }
            case .backup:
                guard s.backup == nil else { throw Self.alreadyRunning }
                let socket = try Self.open(conf, index: index, receiving: true)
                // Not waited for: a VRRP transition starts it from an event loop.
                let channel = DatagramBootstrap(group: group)
                    .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65536))
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(SyncReceiver(daemons: self, configuration: conf))
                        }
                    }
                    .withBoundSocket(socket.rawValue)
                let logger = logger
                channel.whenFailure { error in logger.error("sync daemon: \(error)") }
                s.backup = (conf, channel)
            }
        }
        logger.info(
            "sync daemon started",
            metadata: [
                "state": "\(conf.role.rawValue)", "mcast": "\(conf.interface)", "syncid": "\(conf.syncID)",
                "group": "\(conf.group)", "port": "\(conf.port)",
            ])
    }

    public func stop(_ role: SyncDaemonConfiguration.Role) throws(TableError) {
        try state.withLock { (s) throws(TableError) in
            switch role {
            case .master:
                guard let (c, socket) = s.master else { throw Self.notRunning }
                // What is queued still goes out, as the kernel's master thread flushes before it ends.
                flush(socket, configuration: c)
                for e in engines { e.director.withLock { $0.setSyncing(false) } }
                socket.close()
                s.master = nil
            case .backup:
                guard let (_, channel) = s.backup else { throw Self.notRunning }
                channel.whenSuccess { $0.close(promise: nil) }
                s.backup = nil
            }
        }
        logger.info("sync daemon stopped", metadata: ["state": "\(role.rawValue)"])
    }

    /// Sends what the engines queued (the master's part of a tick).
    public func flush() {
        state.withLock { s in
            guard let (c, socket) = s.master else { return }
            flush(socket, configuration: c)
        }
    }

    func flush(_ socket: Socket, configuration c: SyncDaemonConfiguration) {
        var records: [SyncRecord] = []
        for e in engines { e.director.withLock { $0.takeSyncRecords { records.append($0) } } }
        guard !records.isEmpty else { return }
        var sent: UInt64 = 0
        var failed: UInt64 = 0
        for m in SyncProtocol.encode(records, syncID: c.syncID, maxLength: c.maxLength) {
            if (try? socket.send(m, dontWait: true)) == m.count { sent += 1 } else { failed += 1 }
        }
        stats.withLock {
            $0.messagesSent += sent
            $0.recordsSent += UInt64(records.count)
            $0.sendErrors += failed
        }
    }

    /// A message the backup received: decoded and applied to every engine.
    func received(_ message: [UInt8], configuration c: SyncDaemonConfiguration) {
        let decoded: (syncID: UInt8, records: [SyncRecord], skipped: Int)
        do { decoded = try SyncProtocol.decode(message) } catch {
            let first = stats.withLock { s in
                defer { s.malformedMessages += 1 }
                return s.malformedMessages == 0
            }
            if first { logger.warning("sync: malformed message dropped: \(error)") }
            return
        }
        // A backup with syncid 0 takes every master's messages.
        guard c.syncID == 0 || decoded.syncID == c.syncID else { return }
        let now = MonotonicClock.milliseconds()
        var applied: UInt64 = 0
        var rejected = UInt64(decoded.skipped)
        for outcome in engines.apply(decoded.records, \.self, { $0.applySync($1, now: now) }) {
            if outcome == .created || outcome == .updated { applied += 1 } else { rejected += 1 }
        }
        stats.withLock {
            $0.messagesReceived += 1
            $0.recordsApplied += applied
            $0.recordsRejected += rejected
        }
    }

    static func mtu(_ interface: String) -> Int? {
        KernelFile.firstLine("/sys/class/net/\(interface)/mtu").flatMap { Int($0) }
    }

    /// The daemon's socket: the master's connected to the group, the
    /// backup's bound to it and joined on the interface.
    static func open(_ c: SyncDaemonConfiguration, index: UInt32, receiving: Bool) throws(TableError) -> Socket {
        let v6 = c.group.isIPv6
        do {
            let s = try Socket.open(family: v6 ? AF_INET6 : AF_INET, type: Socket.datagram, nonBlocking: receiving)
            do {
                try s.setFlag(level: SOL_SOCKET, name: SO_REUSEADDR, true, "SO_REUSEADDR")
                try s.bindToDevice(c.interface)
                let group = SocketAddress(c.group, port: c.port, scope: v6 ? index : 0)
                if receiving {
                    try s.joinMulticastGroup(c.group, interface: index)
                    try s.bind(group)
                } else {
                    try s.setMulticastSending(ipv6: v6, interface: index, hops: Int32(c.ttl))
                    if v6 {
                        try s.setOption(level: Int32(IPPROTO_IPV6), name: IPV6_MTU_DISCOVER, Int32(IPV6_PMTUDISC_DONT), "IPV6_MTU_DISCOVER")
                    } else {
                        try s.setOption(level: Int32(IPPROTO_IP), name: IP_MTU_DISCOVER, Int32(IP_PMTUDISC_DONT), "IP_MTU_DISCOVER")
                    }
                    try s.connect(group)
                }
                return s
            } catch {
                s.close()
                throw error
            }
        } catch {
            throw TableError("EIO", "sync daemon \(error)")
        }
    }
}

extension Array where Element == Engine {
    /// Applies connection records each on the worker its client's frames
    /// are steered to and, for FULLNAT, also on the one its replies' local
    /// port is (the same one when both directors run as many workers).
    /// Returns each record's outcome on the first.
    func apply<R>(_ records: [R], _ sync: (R) -> SyncRecord, _ body: (inout Director, R) -> SyncOutcome) -> [SyncOutcome] {
        let ownership = count > 1 ? self[0].director.withLock { $0.ownership } : Ownership()
        var owners = [[Int]](repeating: [], count: count)
        for (n, record) in records.enumerated() {
            let r = sync(record)
            let client = ownership.worker(client: r.client, port: r.clientPort, workers: count)
            owners[client].append(n)
            if r.local != nil {
                let local = Ownership.worker(localPort: r.localPort, workers: count)
                if local != client { owners[local].append(-1 - n) }
            }
        }
        var outcomes = [SyncOutcome](repeating: .invalid, count: records.count)
        for (k, e) in enumerated() where !owners[k].isEmpty {
            e.director.withLock { d in
                for n in owners[k] {
                    let outcome = body(&d, records[n < 0 ? -1 - n : n])
                    if n >= 0 { outcomes[n] = outcome }
                }
            }
        }
        return outcomes
    }
}

/// The backup's channel: each datagram is one sync message.
final class SyncReceiver: ChannelInboundHandler, Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let daemons: SyncDaemons
    let configuration: SyncDaemonConfiguration

    init(daemons: SyncDaemons, configuration: SyncDaemonConfiguration) {
        self.daemons = daemons
        self.configuration = configuration
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var envelope = unwrapInboundIn(data)
        guard let bytes = envelope.data.readBytes(length: envelope.data.readableBytes) else { return }
        daemons.received(bytes, configuration: configuration)
    }
}
