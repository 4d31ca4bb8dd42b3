import LVSControlProtocol
import LVSPacket
import LVSSystem
import Logging
import ServiceLifecycle
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The VIPs lvsd serves, announced over BGP by BIRD (Debian's `bird2`),
/// which lvsd runs with the operator's configuration (`--bird-config`):
/// their peers, filters and timers, and an `include` of the file lvsd
/// writes (`bgp-routes.conf` in `--bird-directory`): two static protocols,
/// `lvsd4` and `lvsd6`, with a `route VIP/32 blackhole;` per VIP lvsd wants
/// announced (`ControlPlane.routeVerdicts`, and its interfaces up), for the
/// operator's BGP channels to export. lvsd rewrites it as that changes and
/// tells BIRD to reconfigure, which announces and withdraws only what
/// changed, without touching a session.
///
/// BIRD lives exactly as long as lvsd: it is started through a shell that
/// stops it when a FIFO lvsd holds open for writing reaches its end, which
/// happens whenever lvsd ends, `kill -9` included; its BGP sessions then
/// close and the routers withdraw this director's routes at once. At a
/// graceful stop lvsd first withdraws every VIP and keeps forwarding for
/// `--bgp-withdraw-delay` seconds while the routers move the flows away,
/// then stops BIRD (ExaBGP's issue 993: the other order drops them).
public final class BGPService: Service, Sendable {
    public struct Settings: Sendable {
        /// The operator's bird.conf.
        public var configuration: String
        /// Route files, BIRD's control socket and the lifeline FIFO.
        public var directory: String
        public var withdrawDelay: Double
        /// lvsd's interfaces: with none up, nothing is announced.
        public var interfaces: [String]
        public var bird = "/usr/sbin/bird"
        public var birdc = "/usr/sbin/birdc"

        public init(configuration: String, directory: String, withdrawDelay: Double, interfaces: [String]) {
            self.configuration = configuration
            self.directory = directory
            self.withdrawDelay = withdrawDelay
            self.interfaces = interfaces
        }

        public var routes: String { directory + "/bgp-routes.conf" }
        public var socket: String { directory + "/bird.ctl" }
        /// BIRD's standard output and error.
        public var output: String { directory + "/bird.out" }
        var lifeline: String { directory + "/bird.lifeline" }
    }

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    let plane: ControlPlane
    let settings: Settings
    let logger: Logger
    let adopted: Adopted?

    /// A predecessor's BIRD (a handover): its process, and the lifeline
    /// opened before the predecessor exits, so that BIRD never sees its end.
    public struct Adopted: Sendable {
        let speaker: Int32
        let lifeline: Int32
    }

    /// Opens the lifeline of the BIRD that `speaker` runs, if it still runs.
    public static func adopt(speaker: Int32, settings: Settings) -> Adopted? {
        guard kill(speaker, 0) == 0 else { return nil }
        // A Swift string as a C path, valid for the call.
        let fd = unsafe open(settings.lifeline, O_RDWR | O_NONBLOCK | O_CLOEXEC)
        return fd >= 0 ? Adopted(speaker: speaker, lifeline: fd) : nil
    }

    /// Checks what BIRD needs before lvsd starts serving: the programs, the
    /// configuration, the directory (made if missing), an empty route file
    /// (BIRD refuses a configuration whose include is missing; an adopted BIRD reads the one it has).
    public init(plane: ControlPlane, settings: Settings, logger: Logger, adopted: Adopted? = nil) throws(Failure) {
        self.plane = plane
        self.settings = settings
        self.logger = logger
        self.adopted = adopted
        for program in [settings.bird, settings.birdc] where !KernelFile.exists(program) {
            throw Failure(description: "\(program) is missing: install Debian's bird2")
        }
        guard KernelFile.exists(settings.configuration) else { throw Failure(description: "no BIRD configuration at \(settings.configuration)") }
        // Each `unsafe` below passes a Swift string as a C path, valid for the call's duration only.
        if !KernelFile.exists(settings.directory) {
            guard unsafe mkdir(settings.directory, 0o755) == 0 else { throw Failure(description: SystemError.last("mkdir \(settings.directory)").description) }
        }
        if adopted == nil {
            do { try Self.write([], to: settings) } catch { throw Failure(description: "\(error)") }
        }
    }

    /// The route file for `addresses`, replaced whole (a rename: BIRD never reads half of one).
    static func write(_ addresses: [IPAddress], to s: Settings) throws(SystemError) {
        try KernelFile.write(s.routes + ".new", routeFile(addresses), create: true)
        guard unsafe rename(s.routes + ".new", s.routes) == 0 else { throw .last("rename \(s.routes)") }
    }

    static func routeFile(_ addresses: [IPAddress]) -> String {
        var text = "# The VIPs lvsd announces, rewritten as they change: export protocols lvsd4 and lvsd6.\n"
        for (name, v6) in [("lvsd4", false), ("lvsd6", true)] {
            text += "protocol static \(name) {\n    \(v6 ? "ipv6" : "ipv4");\n"
            for a in addresses where a.isIPv6 == v6 { text += "    route \(a)/\(v6 ? 128 : 32) blackhole;\n" }
            text += "}\n"
        }
        return text
    }

    public func run() async throws {
        // The lifeline: lvsd keeps it open (for writing, close-on-exec so that no child holds it); its end stops BIRD.
        let lifeline: Int32
        if let adopted {
            lifeline = adopted.lifeline
            plane.speaker.withLock { $0 = adopted.speaker }
            logger.notice("BGP: BIRD (pid \(adopted.speaker)) kept from the previous lvsd, its sessions up")
        } else {
            _ = unsafe unlink(settings.lifeline)
            guard unsafe mkfifo(settings.lifeline, 0o600) == 0 else {
                logger.error("BGP: \(SystemError.last("mkfifo \(settings.lifeline)")); nothing is announced")
                return
            }
            lifeline = unsafe open(settings.lifeline, O_RDWR | O_NONBLOCK | O_CLOEXEC)
            guard lifeline >= 0 else {
                logger.error("BGP: \(SystemError.last("open \(settings.lifeline)")); nothing is announced")
                return
            }
        }
        var speaker: RunningProcess? = nil
        // An adopted BIRD is not this process's child: it is watched by its pid.
        var foster = adopted?.speaker
        var startedAt: UInt64 = 0
        var written: [IPAddress]? = nil
        var told = false
        var refused: String? = nil
        var statuses: [IPAddress: (status: BGPRouteStatus, since: UInt64)] = [:]
        while !Task.isShuttingDownGracefully {
            let now = MonotonicClock.milliseconds()
            if let f = foster, kill(f, 0) != 0 { foster = nil }
            if speaker?.isRunning != true && foster == nil && now &- startedAt >= 2000 {
                if speaker != nil {
                    // Its last words (a configuration error, most often) are in its output.
                    let said = KernelFile.contents(settings.output)?.split(separator: "\n").last.map(String.init) ?? ""
                    logger.error("BGP: BIRD ended (status \(speaker?.terminationStatus ?? -1)): \(said); starting it again")
                }
                speaker = start()
                plane.speaker.withLock { $0 = speaker?.processIdentifier }
                startedAt = now
                told = false
            }
            let interfacesUp = settings.interfaces.isEmpty || settings.interfaces.contains(where: NetworkInterface.isUp)
            let verdicts = plane.routeVerdicts().map { v in (v.address, interfacesUp ? v.withheld : "interfaces down") }
            let wanted = verdicts.filter { $0.1 == nil }.map { $0.0 }
            if wanted != written {
                do {
                    try Self.write(wanted, to: settings)
                    written = wanted
                    told = false
                } catch {
                    logger.error("BGP: \(error)")
                }
            }
            if !told, speaker?.isRunning == true || foster != nil {
                // While BIRD starts its socket is missing: that is not worth a warning.
                if let why = await configure() {
                    if why != refused && KernelFile.exists(settings.socket) { logger.warning("BGP: birdc configure: \(why)") }
                    refused = why
                } else {
                    told = true
                    refused = nil
                    logger.notice("BGP: announcing \(wanted.isEmpty ? "nothing" : wanted.map { "\($0)" }.joined(separator: " "))")
                }
            }
            for (a, why) in verdicts {
                let status = BGPRouteStatus(address: a, announced: why == nil && told, reason: why ?? (told ? "" : "BIRD not told yet"))
                if statuses[a]?.status != status { statuses[a] = (status, now) }
            }
            for a in statuses.keys where !verdicts.contains(where: { $0.0 == a }) { statuses[a] = nil }
            plane.bgp.withLock { $0 = statuses.values.sorted { $0.status.address < $1.status.address } }
            try? await Task.sleep(for: .milliseconds(200))
        }
        // Withdraw everything, keep forwarding while the routers move the flows away, then stop BIRD.
        do { try Self.write([], to: settings) } catch { logger.error("BGP: \(error)") }
        if speaker?.isRunning == true || foster != nil, await configure() == nil {
            logger.notice("BGP: every VIP withdrawn; forwarding for \(settings.withdrawDelay) s more")
            let now = MonotonicClock.milliseconds()
            plane.bgp.withLock { all in
                for k in all.indices { all[k] = (BGPRouteStatus(address: all[k].status.address, announced: false, reason: "stopping"), now) }
            }
            try? await Task.sleep(for: .milliseconds(Int64(settings.withdrawDelay * 1000)))
        }
        _ = close(lifeline)
        _ = speaker?.waitUntilExit(timeout: 5)
        if let f = foster {
            for _ in 0..<500 where kill(f, 0) == 0 { try? await Task.sleep(for: .milliseconds(10)) }
        }
        plane.speaker.withLock { $0 = nil }
        _ = unsafe unlink(settings.lifeline)
    }

    /// BIRD in the foreground, stopped by its shell when the lifeline ends
    /// (and the watcher stopped when BIRD ends first); what it prints goes
    /// to `bird.out` (its log is what its configuration says).
    func start() -> RunningProcess? {
        let script = #"bird -f -c "$1" -s "$2" & b=$!; (read -r _ < "$3"; kill $b) & w=$!; wait $b; s=$?; kill $w 2>/dev/null; exit $s"#
        do {
            let p = try ChildProcess.spawn(
                "/bin/sh", ["-c", script, "lvsd-bird", settings.configuration, settings.socket, settings.lifeline], log: FilePath(settings.output),
                options: .init(environment: ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]))
            logger.notice("BGP: BIRD started", metadata: ["configuration": "\(settings.configuration)", "socket": "\(settings.socket)"])
            return p
        } catch {
            logger.error("BGP: cannot start BIRD: \(error)")
            return nil
        }
    }

    /// `birdc configure`: BIRD reads the route file again. Nil once it
    /// has, else what it answered (it may still be starting).
    func configure() async -> String? {
        let out = await ChildProcess.run(settings.birdc, ["-s", settings.socket, "configure"], timeout: 10, options: .init(captureOutput: true))
        let text = out.output + out.errorOutput
        if out.status == 0 && text.contains("econfigur") && !text.lowercased().contains("error") { return nil }
        return text.split(separator: "\n").last.map(String.init) ?? "status \(out.status ?? -1)"
    }
}
