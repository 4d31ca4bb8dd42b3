import ArgumentParser
import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import LVSCore
import LVSHealth
import LVSLinux
import LVSStatus
import LVSVRRP
import Logging
import NIOPosix
import Synchronization
import LVSDaemon
import LVSConfiguration
import LVSSystem

@main
struct LVSD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lvsd",
        abstract: "The swift-lvs director: virtual services, real servers, connections, in userspace.",
        discussion: "Runs in the foreground. SIGTERM or SIGINT stop it, SIGHUP reloads the --rules and --keepalived files (all or nothing).")

    @Option(help: "The control socket lvsadm talks to (mode 0600).")
    var socket = "/run/lvsd.sock"

    @Option(help: ArgumentHelp("An ipvsadm rules file (the `ipvsadm -S` format) to load; repeatable.", valueName: "file"))
    var rules: [String] = []

    @Option(help: ArgumentHelp("A keepalived.conf whose virtual_server blocks to load; repeatable.", valueName: "file"))
    var keepalived: [String] = []

    @Option(help: ArgumentHelp("An interface to serve; repeatable. Without one lvsd runs its tables only.", valueName: "name"))
    var interface: [String] = []

    @Option(help: ArgumentHelp("How frames reach lvsd: packet (AF_PACKET rings) or xdp (AF_XDP sockets fed by an XDP program, AF_PACKET where XDP is unavailable).",
                               valueName: "packet|xdp"))
    var io: PacketIO = .packet

    @Option(help: "Worker threads; more than one spreads flows by hash (DR and TUN; NAT and FULLNAT replies need one).")
    var workers = 1

    @Flag(help: "Do not install the nftables ingress drop for owned addresses.")
    var noKernelFilter = false

    @Flag(help: "Do not give weight 0 to NAT and FULLNAT real servers that leave SYNs unanswered (DPVS's passive dest-check, on by default).")
    var noPassiveCheck = false

    @Option(help: "Connections the table holds (64 bytes each for IPv4, plus the index).")
    var connectionTableSize = 1 << 20

    @Option(help: ArgumentHelp("Serve Prometheus /metrics and the status page on ADDR:PORT (a bare port binds loopback).", valueName: "addr:port"))
    var metrics: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    mutating func run() throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "lvsd")
        var base = DirectorConfiguration()
        var kernel = KernelView()
        if !interface.isEmpty {
            do {
                kernel = try KernelView.read()
                base = try kernel.configuration(serving: interface)
            } catch {
                logger.critical("cannot learn the interfaces from the kernel: \(error)")
                throw ExitCode(1)
            }
            for i in base.interfaces {
                logger.info("serving interface", metadata: ["index": "\(i.index)", "mac": "\(i.mac)", "ipv4": "\(i.ipv4.map(\.description) ?? "-")",
                                                           "ipv6": "\(i.ipv6.map(\.description) ?? "-")", "mtu": "\(i.mtu)"])
            }
            for path in ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"] where Self.readFlag(path) {
                logger.warning("\(path) is 1: the kernel forwards the frames lvsd forwards too; set it to 0 in the director's namespace")
            }
        }
        let plane = ControlPlane(capacity: connectionTableSize, workers: workers, sources: ConfigurationSources(rules: rules, keepalived: keepalived),
                                 base: base, logger: logger)
        plane.setPassiveCheck(!noPassiveCheck)
        do {
            try plane.reload()
        } catch {
            logger.critical("cannot load the configuration: \(error)")
            throw ExitCode(1)
        }
        // VRRP first: its addresses stay unowned until an instance is master.
        var vrrp: VRRPService? = nil
        let ha: HighAvailabilityConfiguration
        do {
            ha = try plane.sources.loadHighAvailability()
            if !ha.instances.isEmpty { vrrp = try VRRPService(plane: plane, configuration: ha, logger: logger) }
        } catch {
            logger.critical("cannot run VRRP: \(error)")
            throw ExitCode(1)
        }
        let server: ControlServer
        do {
            server = try ControlServer(path: socket, group: MultiThreadedEventLoopGroup.singleton, logger: logger) { plane.handle($0) }
        } catch {
            logger.critical("cannot serve the control socket: \(error)")
            throw ExitCode(1)
        }
        var statusServer: StatusServer? = nil
        if let metrics {
            guard let (host, port) = StatusServer.parseListen(metrics) else {
                logger.critical("--metrics \(metrics): expected ADDR:PORT, [V6ADDR]:PORT or PORT")
                server.stop()
                throw ExitCode(1)
            }
            do {
                statusServer = try StatusServer(host: host, port: port, logger: logger) { plane.status() }
            } catch {
                logger.critical("cannot serve metrics on \(metrics): \(error)")
                server.stop()
                throw ExitCode(1)
            }
            logger.info("serving metrics and the status page", metadata: ["address": "http://\(statusServer!.address)/"])
        }
        var dataPlane: DataPlane? = nil
        if !base.interfaces.isEmpty {
            let served = Set(base.interfaces.map { Int($0.index) })
            for n in kernel.neighbours where served.contains(n.index) {
                for e in plane.engines { e.director.withLock { $0.learnNeighbour(n.address, mac: n.mac) } }
            }
            let dp = DataPlane(engines: plane.engines, interfaces: base.interfaces, io: io, hostAddresses: kernel.addresses.map(\.address), logger: logger)
            do { try dp.start() } catch {
                logger.critical("cannot start the data plane: \(error)")
                server.stop()
                throw ExitCode(1)
            }
            dataPlane = dp
        }
        vrrp?.start()
        logger.info("serving", metadata: ["socket": "\(socket)", "connections": "\(connectionTableSize)", "workers": "\(workers)",
                                          "io": "\(dataPlane?.activeIO.rawValue ?? "-")"])
        // keepalived.conf's checkers; replaced on each successful reload.
        let health = Mutex<HealthMonitor?>(nil)
        @Sendable func restartHealthChecks() {
            do {
                let (targets, quorum) = try plane.sources.loadHealth()
                let next = HealthMonitor(plane: plane, targets: targets, logger: logger)
                let previous = health.withLock { current in
                    defer { current = next }
                    current?.stop()
                    plane.resetHealth(quorum: quorum)
                    return current
                }
                next.start(after: previous)
            } catch {
                logger.error("health checks not restarted: \(error)")
            }
        }
        restartHealthChecks()
        plane.afterReload.withLock {
            $0 = {
                restartHealthChecks()
                // A reload must not make a master resign: VRRP keeps what it started with.
                do {
                    if try plane.sources.loadHighAvailability() != ha {
                        logger.warning("vrrp_instance or lvs_sync_daemon changed: VRRP keeps its configuration until lvsd restarts")
                    }
                } catch {
                    logger.error("vrrp_instance or lvs_sync_daemon broken, VRRP unchanged: \(error)")
                }
            }
        }
        let systemd = SystemdNotifier()
        systemd.notify("READY=1\nSTATUS=serving \(plane.table.services.count) services")

        let stop = DispatchSemaphore(value: 0)
        let signals = DispatchQueue(label: "lvsd.signals")
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: signals)
            s.setEventHandler {
                if sig == SIGHUP {
                    logger.info("SIGHUP: reloading")
                    systemd.notify("RELOADING=1")
                    do { try plane.reload() } catch { logger.error("reload refused, nothing changed: \(error)") }
                    systemd.notify("READY=1\nSTATUS=serving \(plane.table.services.count) services")
                } else {
                    logger.info("\(sig == SIGTERM ? "SIGTERM" : "SIGINT"): stopping")
                    systemd.notify("STOPPING=1")
                    stop.signal()
                }
            }
            s.resume()
            sources.append(s)
        }
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "lvsd.tick"))
        timer.schedule(deadline: .now(), repeating: .milliseconds(100))
        // The watchdog is fed from the same timer that drives the engine: a stuck engine stops feeding it.
        let watchdogEvery = systemd.watchdogInterval.map { max(1, $0 / 100) }
        var ticks: UInt64 = 0
        timer.setEventHandler {
            plane.tick()
            ticks &+= 1
            if let every = watchdogEvery, ticks % every == 0 { systemd.notify("WATCHDOG=1") }
        }
        timer.resume()

        let filter = interface.isEmpty || noKernelFilter ? nil : KernelFilter(interfaces: interface, logger: logger)
        let served = dataPlane
        let filterQueue = DispatchQueue(label: "lvsd.filter")
        @Sendable func followOwnership() {
            guard let engine = plane.engines.first else { return }
            let (owned, replySources) = engine.director.withLock { ($0.ownedAddresses, $0.replySources) }
            filter?.update(owned: owned)
            served?.updateAddresses(owned: owned, replySources: replySources)
        }
        // At once on every change (a burst of changes, as from -R, coalesces into one update); the timer only backs that up.
        nonisolated(unsafe) let ownershipChanged = DispatchSource.makeUserDataAddSource(queue: filterQueue)  // add(data:) is thread-safe
        ownershipChanged.setEventHandler(handler: followOwnership)
        ownershipChanged.resume()
        plane.ownershipChanged.withLock { $0 = { ownershipChanged.add(data: 1) } }
        let filterTimer = DispatchSource.makeTimerSource(queue: filterQueue)
        filterTimer.schedule(deadline: .now(), repeating: .milliseconds(500))
        filterTimer.setEventHandler(handler: followOwnership)
        filterTimer.resume()

        // Addresses, routes and neighbours change under a running director.
        let names = interface
        let refresh = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "lvsd.netlink"))
        refresh.schedule(deadline: .now() + .seconds(5), repeating: .seconds(5))
        refresh.setEventHandler {
            guard !names.isEmpty, let view = try? KernelView.read(), let c = try? view.configuration(serving: names) else { return }
            plane.updateBase(interfaces: c.interfaces, routes: c.routes)
            let served = Set(c.interfaces.map { Int($0.index) })
            for n in view.neighbours where served.contains(n.index) {
                for e in plane.engines { e.director.withLock { $0.learnNeighbour(n.address, mac: n.mac) } }
            }
        }
        refresh.resume()

        stop.wait()
        vrrp?.stop()
        refresh.cancel()
        health.withLock { h in
            h?.stop()
            h?.runOmegaNotifiers()
        }
        plane.runOmegaQuorumDown()
        filterTimer.cancel()
        ownershipChanged.cancel()
        // On the filter's queue: behind an update still running, so that none reinstalls the table after this.
        filterQueue.sync { filter?.remove() }
        timer.cancel()
        dataPlane?.stop()
        statusServer?.stop()
        server.stop()
        logger.info("stopped")
        _ = sources
    }

    static func readFlag(_ path: String) -> Bool {
        KernelFile.firstLine(path) == "1"
    }
}

extension PacketIO: ExpressibleByArgument {}
