import ArgumentParser
import LVSConfiguration
import LVSControlProtocol
import LVSCore
import LVSDaemon
import LVSHealth
import LVSLinux
import LVSStatus
import LVSSystem
import LVSVRRP
import Logging
import NIOPosix
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

@main
struct LVSD: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lvsd",
        abstract: "The swift-lvs director: virtual services, real servers, connections, in userspace.",
        discussion: """
            Runs in the foreground. SIGTERM or SIGINT stop it, SIGHUP reloads the --rules, --keepalived and --marks files (all or \
            nothing), SIGUSR2 starts lvsd's binary again with --takeover (an upgrade that keeps every connection). Connections are \
            kept in --state-file for the lvsd after this one, after a crash too.
            """)

    @Option(help: "The control socket lvsadm talks to (mode 0600).")
    var socket = "/run/lvsd.sock"

    @Option(help: ArgumentHelp("An ipvsadm rules file (the `ipvsadm -S` format) to load; repeatable.", valueName: "file"))
    var rules: [String] = []

    @Option(help: ArgumentHelp("A keepalived.conf whose virtual_server blocks to load; repeatable.", valueName: "file"))
    var keepalived: [String] = []

    @Option(
        help: ArgumentHelp(
            "Firewall-mark rules in nft's syntax, one per line (ip daddr 198.18.1.10 tcp dport { 80, 443 } meta mark set 1), run before the nftables ruleset's; repeatable, reloaded with SIGHUP.",
            valueName: "file"))
    var marks: [String] = []

    @Option(
        help: ArgumentHelp(
            "How often lvsd reads the nftables ruleset for its prerouting marking rules (iptables -t mangle … -j MARK included) while it serves a firewall-mark service; 0: never.",
            valueName: "seconds"))
    var nftablesInterval: Double = 1

    @Option(help: ArgumentHelp("An interface to serve; repeatable. Without one lvsd runs its tables only.", valueName: "name"))
    var interface: [String] = []

    @Option(
        help: ArgumentHelp(
            "How frames reach lvsd: packet (AF_PACKET rings) or xdp (AF_XDP sockets fed by an XDP program, AF_PACKET where XDP is unavailable).",
            valueName: "packet|xdp"))
    var io: PacketIO = .packet

    @Option(
        help: ArgumentHelp(
            "Worker threads: a number, or auto (one per receive queue of the busiest served interface, at most one per core).",
            valueName: "n|auto"))
    var workers: WorkerCount = .auto

    @Flag(help: "Do not install the nftables ingress drop for owned addresses.")
    var noKernelFilter = false

    @Flag(help: "Do not give weight 0 to NAT and FULLNAT real servers that leave SYNs unanswered (DPVS's passive dest-check, on by default).")
    var noPassiveCheck = false

    @Flag(
        help: """
            As the kernel's sloppy_sctp: an SCTP packet of an association lvsd did not see start (a multi-homed peer's other \
            path, another director's association) creates a connection, as INIT does; without it only INIT does.
            """)
    var sloppySCTP = false

    @Flag(
        help: """
            As the kernel's sloppy_tcp: a TCP packet of a connection lvsd did not see start (another director's, moved here by \
            ECMP) is scheduled and creates a connection, as a SYN does (not for a FULLNAT service). With mh-sorted or ch every director \
            picks the same real server.
            """)
    var sloppyTCP = false

    @Flag(
        help: """
            lvsd's own, for NAT across directors: a NAT real server's reply of a connection lvsd did not make (another \
            director's; the real servers spread their replies over the directors' gateway addresses) makes the connection, \
            with the VIP and port of the one NAT service that has this real server and port, and goes on to the client. \
            A real server and port in two NAT services: such replies are dropped (ambiguous-reply).
            """)
    var sloppyNAT = false

    @Flag(
        help: """
            lvsd's own: once lvsd has seen a connection established (a UDP flow: made), a tc program it loads forwards the \
            connection's frames in the kernel, rewritten as lvsd would (IPv4 NAT and DR, TCP and UDP), until a SYN, FIN or RST \
            gives it back; lvsd counts, keeps alive, syncs and writes it as its own once a second. With --io packet.
            """)
    var kernelForwarding = false

    @Option(
        help: ArgumentHelp(
            "TCP service ports whose NAT and FULLNAT connections the FTP helper reads (PASV, EPSV, PORT, EPRT), as ip_vs_ftp's ports=; none to turn it off.",
            valueName: "port,…|none"))
    var ftpPorts = "21"

    /// `--ftp-ports` as numbers; nil when it is not a list of ports.
    var ftpPortList: [UInt16]? {
        if ftpPorts == "none" { return [] }
        let ports = ftpPorts.split(separator: ",").map { UInt16($0) }
        return ports.isEmpty || ports.contains(nil) || ports.contains(0) ? nil : ports.compactMap { $0 }
    }

    @Option(help: "Connections the table holds (64 bytes each for IPv4, plus the index).")
    var connectionTableSize = 1 << 20

    @Option(
        help: ArgumentHelp(
            """
            Where lvsd keeps its connections for the lvsd after it (a restart, an upgrade, a crash, kill -9 included): a file on \
            tmpfs, written where a sync master would send a connection; the next lvsd restores what is in it. Default: the \
            --socket path with .state for .sock; none to keep nothing.
            """, valueName: "path|none"))
    var stateFile: String?

    @Flag(
        help: """
            Take over from the lvsd serving --socket (a new version, new arguments): it stops reading frames, writes every \
            connection to the state file and exits once this lvsd forwards them, without resigning VRRP mastership; this lvsd's \
            rings are open before it stops, so no frame falls between the two. Without a running lvsd, lvsd starts as usual.
            """)
    var takeover = false

    func bgpSettings(_ birdConfig: String) -> BGPService.Settings {
        BGPService.Settings(
            configuration: birdConfig, directory: birdDirectory ?? "/run/lvsd", withdrawDelay: max(0, bgpWithdrawDelay ?? 2), interfaces: interface)
    }

    /// `--state-file`, or its default next to the control socket.
    var statePath: String? {
        if let stateFile { return stateFile == "none" ? nil : stateFile }
        return (socket.hasSuffix(".sock") ? String(socket.dropLast(5)) : socket) + ".state"
    }

    @Option(help: ArgumentHelp("Serve Prometheus /metrics and the status page on ADDR:PORT (a bare port binds loopback).", valueName: "addr:port"))
    var metrics: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @Option(
        help: ArgumentHelp(
            """
            Announce the VIPs over BGP: lvsd runs BIRD (Debian's bird2) with this configuration, which includes the file lvsd \
            writes in --bird-directory (bgp-routes.conf: static protocols lvsd4 and lvsd6, for its BGP channels to export). A VIP \
            is announced while one of \
            its services has a real server with weight and its quorum, lvsd owns it (not a VRRP backup) and an interface is up; \
            BIRD stops with lvsd, even after kill -9.
            """, valueName: "bird.conf"))
    var birdConfig: String?

    @Option(help: ArgumentHelp("Where the route file, BIRD's control socket (bird.ctl) and lifeline go (default /run/lvsd).", valueName: "dir"))
    var birdDirectory: String?

    @Option(help: ArgumentHelp("Seconds lvsd keeps forwarding after withdrawing its VIPs at a graceful stop (default 2).", valueName: "seconds"))
    var bgpWithdrawDelay: Double?

    @Flag(
        help: """
            Check the --rules and --keepalived files, as keepalived -t does, and exit: each keyword lvsd ignores is listed with \
            its file, line and why; the exit status is 1 when a file asks for something lvsd does not do, 2 when one does not load.
            """)
    var checkConfig = false

    func validate() throws {
        guard nftablesInterval >= 0, nftablesInterval.isFinite else { throw ValidationError("--nftables-interval must be 0 or more seconds") }
        guard ftpPortList != nil else { throw ValidationError("--ftp-ports \(ftpPorts): expected ports 1 to 65535, comma-separated, or none") }
        guard !kernelForwarding || io == .packet else {
            throw ValidationError("--kernel-forwarding works with --io packet: an XDP program takes lvsd's frames before tc sees them")
        }
    }

    /// Sets everything up (any failure here stops lvsd with one clear line),
    /// then runs the services until SIGTERM or SIGINT.
    mutating func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        if checkConfig {
            do {
                let notices = try ConfigurationSources(rules: rules, keepalived: keepalived, marks: marks).check()
                for n in notices { print(n) }
                let unsupported = notices.filter(\.unsupported).count
                print(
                    "\(rules.count + keepalived.count + marks.count) files loaded; \(unsupported) keywords not supported, \(notices.count - unsupported) ignored"
                )
                throw ExitCode(unsupported > 0 ? 1 : 0)
            } catch let e as ConfigurationError {
                print(e)
                throw ExitCode(2)
            }
        }
        let logger = Logger(label: "lvsd")
        let signals = SignalEvents([SIGHUP, SIGTERM, SIGINT, SIGUSR2])
        // The binary as started: a package upgrade replaces the file at this path, which SIGUSR2 starts.
        let binary = ExecutablePath.current ?? CommandLine.arguments[0]
        func fail(_ message: String) -> ExitCode {
            logger.critical("\(message)")
            return ExitCode(1)
        }
        let group = MultiThreadedEventLoopGroup.singleton
        var base = DirectorConfiguration()
        var kernel = KernelView()
        if !interface.isEmpty {
            do {
                kernel = try KernelView.read()
                base = try kernel.configuration(serving: interface)
            } catch {
                throw fail("cannot learn the interfaces from the kernel: \(error)")
            }
            for i in base.interfaces {
                logger.info(
                    "serving interface",
                    metadata: [
                        "index": "\(i.index)", "mac": "\(i.mac)", "ipv4": "\(i.ipv4.map(\.description) ?? "-")",
                        "ipv6": "\(i.ipv6.map(\.description) ?? "-")", "mtu": "\(i.mtu)",
                    ])
            }
            // Protocol-bound rings (kernel forwarding) come after a bridge's or bond's receive handler, which takes its ports' frames.
            if kernelForwarding, let port = interface.first(where: { KernelFile.exists("/sys/class/net/\($0)/master") }) {
                throw fail(
                    "--kernel-forwarding cannot serve \(port): it belongs to a bridge or bond, which takes its frames before lvsd's rings would; serve the master, or run without the flag"
                )
            }
            for path in ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"] where KernelFile.firstLine(path) == "1" {
                logger.warning("\(path) is 1: the kernel forwards the frames lvsd forwards too; set it to 0 in the director's namespace")
            }
        }
        base.sloppySCTP = sloppySCTP
        base.sloppyTCP = sloppyTCP
        base.sloppyNAT = sloppyNAT
        base.kernelForwarding = kernelForwarding
        base.ftpPorts = ftpPortList ?? []
        let workers = workers.resolved(interfaces: interface)
        let plane = ControlPlane(
            capacity: connectionTableSize, workers: workers, sources: ConfigurationSources(rules: rules, keepalived: keepalived, marks: marks),
            base: base, group: group, logger: logger)
        plane.setPassiveCheck(!noPassiveCheck)
        // init_file: the track_files exist before anything reads them.
        do {
            for f in try plane.sources.loadTrackFiles() where try f.initialize() { logger.notice("track_file \(f.name): \(f.path) initialised") }
        } catch {
            throw fail("track_file: \(error)")
        }
        do { try plane.reload() } catch { throw fail("cannot load the configuration: \(error)") }
        var dataPlane: DataPlane? = nil
        if !base.interfaces.isEmpty {
            let served = Set(base.interfaces.map { Int($0.index) })
            for n in kernel.neighbours where served.contains(n.index) {
                for e in plane.engines { e.director.withLock { $0.learnNeighbour(n.address, mac: n.mac) } }
            }
            let dp = DataPlane(
                engines: plane.engines, interfaces: base.interfaces, io: io, hostAddresses: kernel.addresses.map(\.address),
                kernelFlowCapacity: kernelForwarding ? 2 * connectionTableSize : 0, logger: logger)
            // Open before the predecessor stops reading: what arrives meanwhile waits in these rings.
            do { try dp.open() } catch { throw fail("cannot start the data plane: \(error)") }
            dataPlane = dp
        }
        // --takeover: the running lvsd stops reading, writes every connection and lets go of its state file.
        var predecessor: HandoverState? = nil
        let asked = MonotonicClock.milliseconds()
        if takeover {
            let answer: ControlResponse?
            do { answer = try Takeover.request(.prepare, socket: socket) } catch {
                logger.notice("--takeover: no lvsd to take over (\(error)); starting")
                answer = nil
            }
            switch answer {
            case .handover(let h)?:
                predecessor = h
                dataPlane?.discardPending(receivedBy: h.forwardedUntil)
                plane.carry(h.counters)
                plane.carry(passive: h.passive ?? [])
                logger.notice("taking over from lvsd \(h.pid)")
            case .failed(let e)?: throw fail("--takeover: the running lvsd refused: \(e.message)")
            case nil: break
            default: throw fail("--takeover: the running lvsd answered out of turn")
            }
        }
        func abandon(_ message: String) -> ExitCode {
            if predecessor != nil { _ = try? Takeover.request(.abort, socket: socket) }
            return fail(message)
        }
        // Restored before any frame, check or VRRP advertisement: what the previous lvsd forwarded goes on.
        var state: StateFile? = nil
        if let statePath {
            do {
                let begun = MonotonicClock.milliseconds()
                let (file, report) = try StateFile.attach(path: statePath, from: predecessor?.stateFile, plane: plane)
                logger.info("state file \(statePath) read in \(MonotonicClock.milliseconds() - begun) ms")
                if let why = file.loaded.discarded { logger.warning("state file \(statePath) not used, no connections restored: \(why)") }
                if report != RestoreReport() {
                    logger.log(level: report.dropped > 0 ? .warning : .notice, "state file \(statePath): \(report)")
                }
                state = file
            } catch {
                throw abandon("state file: \(error)")
            }
        }
        // VRRP first: its addresses stay unowned until an instance is master (or was, before a handover).
        var services: [any Service] = []
        let ha: HighAvailabilityConfiguration
        let vrrp: VRRPService?
        do {
            ha = try plane.sources.loadHighAvailability()
            vrrp =
                ha.instances.isEmpty
                ? nil : try VRRPService(plane: plane, configuration: ha, group: group, logger: logger, resuming: Set(predecessor?.vrrpMasters ?? []))
        } catch {
            throw abandon("cannot run VRRP: \(error)")
        }
        dataPlane?.run()
        var adoptedSpeaker: BGPService.Adopted? = nil
        if let predecessor {
            // Its BIRD stays: the lifeline is held open here before the predecessor lets go of it.
            if let birdConfig, let pid = predecessor.speaker {
                adoptedSpeaker = BGPService.adopt(speaker: pid, settings: bgpSettings(birdConfig))
            }
            for daemon in predecessor.syncDaemons {
                do { try plane.sync.start(daemon) } catch { if error.code != "EEXIST" { logger.error("sync daemon \(daemon.role.rawValue): \(error)") } }
            }
            // Under systemd this process becomes the unit's main one first (NotifyAccess=all): the predecessor's exit is then no stop.
            SystemdNotifier().notify("MAINPID=\(getpid())")
            // It exits at once; its socket and metrics port are then free.
            _ = try? Takeover.request(.finish, socket: socket)
            let forwarding = MonotonicClock.milliseconds()
            _ = waitForExit(predecessor.pid, seconds: 5)
            logger.notice("took over from lvsd \(predecessor.pid): frames waited \(forwarding - asked) ms in the rings")
        }
        do {
            services.append(try ControlServer(path: socket, group: group, logger: logger) { plane.handle($0) })
        } catch {
            throw fail("cannot serve the control socket: \(error)")
        }
        if let metrics {
            guard let (host, port) = StatusServer.parseListen(metrics) else {
                throw fail("--metrics \(metrics): expected ADDR:PORT, [V6ADDR]:PORT or PORT")
            }
            do {
                let status = try StatusServer(host: host, port: port, group: group, logger: logger) { plane.status() }
                logger.info("serving metrics and the status page", metadata: ["address": "http://\(status.address)/"])
                services.append(status)
            } catch {
                throw fail("cannot serve metrics on \(metrics): \(error)")
            }
        }
        if let dataPlane, let state {
            let agent = HandoverAgent(plane: plane, dataPlane: dataPlane, state: state, logger: logger)
            plane.handover.withLock { $0 = { agent.respond($0) } }
        } else if dataPlane != nil {
            plane.handover.withLock {
                $0 = { _ in .failed(TableError("EOPNOTSUPP", "this lvsd runs with --state-file none: it has no file to hand its connections over in")) }
            }
        }
        logger.info(
            "serving",
            metadata: [
                "socket": "\(socket)", "connections": "\(connectionTableSize)", "workers": "\(workers)",
                "io": "\(dataPlane?.activeIO.rawValue ?? "-")", "kernel-forwarding": "\(kernelForwarding && dataPlane != nil ? "tc" : "off")",
            ])
        let systemd = SystemdNotifier()
        let health = HealthService(plane: plane, group: group, logger: logger, inherited: predecessor?.healthDown ?? [:])
        plane.afterReload.withLock {
            $0 = {
                health.restart()
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
        // Started in this order, stopped in the reverse: VRRP resigns first, the workers stop last.
        if let dataPlane { services.insert(DataPlaneService(dataPlane), at: 0) }
        services.append(TickService(plane: plane, systemd: systemd))
        let filter = interface.isEmpty || noKernelFilter ? nil : KernelFilter(interfaces: interface, ringsAfterIngress: kernelForwarding, logger: logger)
        services.append(OwnershipService(plane: plane, filter: filter, dataPlane: dataPlane))
        if !interface.isEmpty { services.append(KernelWatchService(plane: plane, interfaces: interface, group: group, logger: logger)) }
        services.append(health)
        if nftablesInterval > 0 { services.append(NftablesMarkService(plane: plane, interval: nftablesInterval, logger: logger)) }
        if let vrrp { services.append(vrrp) }
        // After VRRP: at a stop the VIPs are withdrawn before anything else lets go of them.
        if birdConfig == nil && (birdDirectory != nil || bgpWithdrawDelay != nil) {
            throw fail("--bird-directory and --bgp-withdraw-delay need --bird-config")
        }
        if let birdConfig {
            do {
                services.append(try BGPService(plane: plane, settings: bgpSettings(birdConfig), logger: logger, adopted: adoptedSpeaker))
            } catch {
                throw fail("cannot announce over BGP: \(error)")
            }
        }
        let running = Mutex<ServiceGroup?>(nil)
        services.append(
            SignalService(
                signals: signals, plane: plane, systemd: systemd, logger: logger,
                stop: { await running.withLock { $0 }?.triggerGracefulShutdown() },
                upgrade: { [arguments = Array(CommandLine.arguments.dropFirst().filter { $0 != "--takeover" })] in
                    do {
                        let successor = try ChildProcess.spawn(binary, arguments + ["--takeover"], options: .init(inheritOutput: true))
                        logger.notice("SIGUSR2: \(binary) started to take over (pid \(successor.processIdentifier))")
                    } catch {
                        logger.error("SIGUSR2: cannot start \(binary): \(error)")
                    }
                }))
        let serviceGroup = ServiceGroup(configuration: .init(services: services, logger: logger))
        running.withLock { $0 = serviceGroup }
        systemd.notify("READY=1\nSTATUS=serving \(plane.table.services.count) services")
        try await serviceGroup.run()
        withExtendedLifetime(state) {}
        logger.info("stopped")
    }
}

extension PacketIO: ExpressibleByArgument {}

/// Waits until process `pid` has gone; false after `seconds`.
func waitForExit(_ pid: Int32, seconds: Double) -> Bool {
    for _ in 0..<Int(seconds * 1000) {
        if kill(pid, 0) != 0 { return true }
        usleep(1000)
    }
    return false
}

/// `--workers`: how many data-plane threads.
enum WorkerCount: ExpressibleByArgument, Equatable {
    case auto
    case count(Int)

    init?(argument: String) {
        if argument == "auto" {
            self = .auto
        } else if let n = Int(argument), (1...1024).contains(n) {
            self = .count(n)
        } else {
            return nil
        }
    }

    var defaultValueDescription: String { "auto" }

    /// Auto: as many as the served interfaces have receive queues (a queue
    /// is where a NIC spreads its load), no more than the cores lvsd may run on.
    func resolved(interfaces: [String]) -> Int {
        switch self {
        case .count(let n): return n
        case .auto:
            let queues = interfaces.map { NetworkInterface.receiveQueues($0) }.max() ?? 1
            return max(1, min(queues, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        }
    }
}
