import LVSConfiguration
import LVSCore
import LVSLinux
import LVSPacket
import LVSSystem
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// lvsd's services. Each is a swift-service-lifecycle `Service`: lvsd runs
// them in one `ServiceGroup`, which starts them together and stops them in
// reverse order on SIGTERM or SIGINT. Their sockets are SwiftNIO channels
// on lvsd's one event-loop group; their waiting is Swift concurrency; the
// data plane's workers are the only threads lvsd starts itself.

/// The data plane's workers, from start to graceful shutdown.
public struct DataPlaneService: Service {
    let dataPlane: DataPlane

    public init(_ dataPlane: DataPlane) { self.dataPlane = dataPlane }

    public func run() async throws {
        try? await gracefulShutdown()
        dataPlane.stop()
    }
}

/// The nftables ruleset's marking rules, followed: while some service is a
/// firewall mark's, `nft list ruleset` is read every `interval` seconds and
/// compiled again when it changed (iptables-nft's rules are in it). Each
/// rule lvsd cannot follow is named once per change of the ruleset.
public struct NftablesMarkService: Service {
    let plane: ControlPlane
    let interval: Double
    let logger: Logger

    public init(plane: ControlPlane, interval: Double, logger: Logger) {
        self.plane = plane
        self.interval = interval
        self.logger = logger
        plane.state.withLock { $0.nftablesWatched = true }
    }

    public func run() async throws {
        var text: String? = nil
        var compiled: MarkRules? = nil
        var failing = false
        while !Task.isShuttingDownGracefully {
            if plane.servesFirewallMarks {
                let out = await ChildProcess.run("nft", ["list", "ruleset"], timeout: 10, options: .init(captureOutput: true, searchPath: true))
                if out.status != 0 {
                    if !failing {
                        let why =
                            out.status == 127
                            ? "nft is not installed" : out.errorOutput.split(separator: "\n").first.map(String.init) ?? "exit \(out.status ?? -1)"
                        logger.warning("cannot read the nftables ruleset (\(why)): its firewall marks are not followed until it can")
                    }
                    failing = true
                    plane.readNftablesMarks(nil)
                } else if out.output != text {
                    failing = false
                    text = out.output
                    let marks = MarkRules.nftables(out.output)
                    // lvsd's own ingress table changes the text too: a change is told only when the rules changed.
                    if marks != compiled {
                        for n in marks.notices { logger.warning("nftables rule not followed: \(n)") }
                        logger.info("firewall marks from nftables", metadata: ["lines": "\(marks.lines.count)", "not-followed": "\(marks.notices.count)"])
                        compiled = marks
                    }
                    plane.readNftablesMarks(marks)
                } else {
                    plane.readNftablesMarks(nil)
                }
            }
            do { try await Task.sleep(for: .milliseconds(Int64(interval * 1000))) } catch { return }
        }
    }
}

/// The control plane's clock: connection expiry, rates, the sync master's
/// sends and the passive check, every 100 ms; systemd's watchdog is fed from
/// the same loop, so that a stuck engine stops feeding it.
public struct TickService: Service {
    let plane: ControlPlane
    let systemd: SystemdNotifier

    public init(plane: ControlPlane, systemd: SystemdNotifier) {
        self.plane = plane
        self.systemd = systemd
    }

    public func run() async throws {
        let watchdogEvery = systemd.watchdogInterval.map { max(1, $0 / 100) }
        var ticks: UInt64 = 0
        while !Task.isShuttingDownGracefully {
            do { try await Task.sleep(for: .milliseconds(100)) } catch { return }
            plane.tick()
            ticks &+= 1
            if let every = watchdogEvery, ticks % every == 0 { systemd.notify("WATCHDOG=1") }
        }
    }
}

/// lvsd's signals: SIGHUP reloads the --rules, --keepalived and --marks files (all
/// or nothing); SIGUSR2 starts lvsd's binary again with --takeover (an
/// upgrade, or a restart with what the files say now); SIGTERM or SIGINT stops lvsd. The signals are trapped before
/// lvsd serves anything (the sequence is made first), so that none arriving
/// while it starts is lost or kills it.
public struct SignalService: Service {
    let signals: SignalEvents
    let plane: ControlPlane
    let systemd: SystemdNotifier
    let logger: Logger
    let stop: @Sendable () async -> Void
    let upgrade: @Sendable () -> Void

    /// `stop` starts the graceful shutdown of every service; `upgrade` starts a successor.
    public init(
        signals: SignalEvents, plane: ControlPlane, systemd: SystemdNotifier, logger: Logger, stop: @escaping @Sendable () async -> Void,
        upgrade: @escaping @Sendable () -> Void
    ) {
        self.upgrade = upgrade
        self.signals = signals
        self.plane = plane
        self.systemd = systemd
        self.logger = logger
        self.stop = stop
    }

    public func run() async throws {
        for await signal in signals.cancelOnGracefulShutdown() {
            if signal == SIGUSR2 {
                upgrade()
                continue
            }
            guard signal == SIGHUP else {
                logger.info("\(signal == SIGTERM ? "SIGTERM" : "SIGINT"): stopping")
                systemd.notify("STOPPING=1")
                await stop()
                // Returning before the group has begun its shutdown would read as a failure.
                try? await gracefulShutdown()
                return
            }
            logger.info("SIGHUP: reloading")
            systemd.notify("RELOADING=1")
            do { try plane.reload() } catch { logger.error("reload refused, nothing changed: \(error)") }
            systemd.notify("READY=1\nSTATUS=serving \(plane.table.services.count) services")
        }
    }
}

/// Hands the engines' owned addresses to the kernel filter (nft) and the
/// XDP program as soon as they change (a burst of changes, as from -R,
/// coalesces into one update); a half-second timer backs that up. At
/// shutdown the filter's table goes, after any update still running.
public struct OwnershipService: Service {
    let plane: ControlPlane
    let filter: KernelFilter?
    let dataPlane: DataPlane?
    let changes: AsyncStream<Void>
    let continuation: AsyncStream<Void>.Continuation

    public init(plane: ControlPlane, filter: KernelFilter?, dataPlane: DataPlane?) {
        self.plane = plane
        self.filter = filter
        self.dataPlane = dataPlane
        (changes, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let continuation = continuation
        plane.ownershipChanged.withLock { $0 = { continuation.yield() } }
    }

    public func run() async throws {
        let continuation = continuation
        let backstop = Task {
            while !Task.isCancelled {
                continuation.yield()
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        for await _ in changes.cancelOnGracefulShutdown() {
            guard let engine = plane.engines.first else { continue }
            let ownership = engine.director.withLock { $0.ownership }
            await filter?.update(owned: ownership.owned)
            dataPlane?.update(ownership)
        }
        backstop.cancel()
        plane.ownershipChanged.withLock { $0 = nil }
        await filter?.remove()
    }
}

/// Follows the kernel's links, addresses, routes and neighbours through
/// rtnetlink's notifications (no polling): a neighbour's MAC goes to the
/// engines at once; a change of the others brings a fresh view of them
/// (dumped once the burst is over) to the control plane. When the kernel
/// drops notifications (the socket overran), the subscription starts again
/// from a full view.
public final class KernelWatchService: Service, Sendable {
    let plane: ControlPlane
    let interfaces: [String]
    let group: any EventLoopGroup
    let logger: Logger

    public init(plane: ControlPlane, interfaces: [String], group: any EventLoopGroup, logger: Logger) {
        self.plane = plane
        self.interfaces = interfaces
        self.group = group
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully {
            let channel: any Channel
            do {
                let socket = try RouteNetlink.open(groups: RouteNetlink.everyGroup, nonBlocking: true)
                channel = try await NIOPipeBootstrap(group: group)
                    .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 1 << 16))
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(KernelEventHandler(watcher: self))
                        }
                    }
                    .takingOwnershipOfDescriptor(input: socket.rawValue).get()
            } catch {
                logger.error("netlink subscription: \(error); addresses, routes and neighbours are not followed")
                try? await gracefulShutdown()
                return
            }
            // What changed while nobody listened (at start, or after an overrun).
            refresh()
            await withGracefulShutdownHandler {
                try? await channel.closeFuture.get()
            } onGracefulShutdown: {
                channel.close(promise: nil)
            }
        }
    }

    /// A fresh view of the interfaces lvsd serves, and their neighbours.
    func refresh() {
        guard !interfaces.isEmpty else { return }
        do {
            let view = try KernelView.read()
            let c = try view.configuration(serving: interfaces)
            plane.updateBase(interfaces: c.interfaces, routes: c.routes)
            let served = Set(c.interfaces.map { Int($0.index) })
            for n in view.neighbours where served.contains(n.index) { learn(n) }
        } catch {
            logger.warning("kernel view: \(error)")
        }
    }

    func learn(_ n: KernelView.NeighbourEntry) {
        for e in plane.engines { e.director.withLock { $0.learnNeighbour(n.address, mac: n.mac) } }
    }
}

/// Each datagram's notifications: neighbours applied at once, the rest
/// coalesced into one refresh 50 ms after the last of a burst.
final class KernelEventHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let watcher: KernelWatchService
    var pending: Scheduled<Void>? = nil

    init(watcher: KernelWatchService) { self.watcher = watcher }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        guard let bytes = buffer.readBytes(length: buffer.readableBytes) else { return }
        var changed = false
        for m in RouteNetlink.messages(in: bytes[...]) {
            switch m.type {
            case RouteNetlink.newNeighbour:
                if let n = KernelView.neighbour(m) { watcher.learn(n) }
            case RouteNetlink.newLink, RouteNetlink.deleteLink, RouteNetlink.newAddress, RouteNetlink.deleteAddress,
                RouteNetlink.newRoute, RouteNetlink.deleteRoute:
                changed = true
            default:
                break
            }
        }
        guard changed else { return }
        pending?.cancel()
        let watcher = watcher
        // The dumps block briefly: on the thread pool, not the event loop.
        pending = context.eventLoop.scheduleTask(in: .milliseconds(50)) {
            NIOThreadPool.singleton.submit { _ in watcher.refresh() }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ENOBUFS: notifications were lost; a new subscription starts from a full view.
        watcher.logger.notice("netlink: \(error); subscribing again")
        context.close(promise: nil)
    }
}
