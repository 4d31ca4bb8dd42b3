import LVSCore
import LVSPacket
import LVSSystem

/// One `vrrp_instance` of a keepalived.conf.
public struct VRRPInstanceConfiguration: Sendable, Hashable, Codable {
    public enum State: String, Sendable, Hashable, Codable {
        case master = "MASTER"
        case backup = "BACKUP"
    }
    public var name: String
    public var state: State = .backup
    public var interface: String = ""
    public var virtualRouterID: UInt8 = 0
    public var priority: UInt8 = 100
    /// Centiseconds (`advert_int` 1 is 100).
    public var advertisementInterval: UInt16 = 100
    /// `virtual_ipaddress`: advertised and owned while master.
    public var addresses: [IPAddress] = []
    /// `virtual_ipaddress_excluded`: owned while master, not advertised.
    public var excludedAddresses: [IPAddress] = []
    public var preempt = true
    /// Milliseconds after start-up before this router preempts a lower one.
    public var preemptDelay: UInt64 = 0
    /// `track_interface { IF [weight W] }`: the interfaces whose state moves this instance.
    public var trackInterfaces: [Tracked] = []
    /// `track_script { NAME [weight W [reverse]] }`: the scripts whose verdicts move this instance.
    public var trackScripts: [Tracked] = []
    /// `track_process { NAME [weight W [reverse]] }`: the `vrrp_track_process`es whose quorum moves it.
    public var trackProcesses: [Tracked] = []
    /// `track_file { NAME [weight W [reverse]] }`: the `track_file`s whose value moves it.
    public var trackFiles: [Tracked] = []
    public var notifyMaster: String?
    public var notifyBackup: String?
    public var notifyFault: String?
    public var notifyStop: String?
    /// `notify`: called with `INSTANCE <name> <state> <priority>`.
    public var notify: String?
    /// 2 (keepalived's default `vrrp_version`) or 3 (RFC 5798; always, for IPv6).
    public var version: Int = 2
    /// `authentication { auth_type PASS|AH; auth_pass … }` (version 2 over
    /// IPv4 only, as keepalived).
    public var authentication: VRRPAuthentication?
    /// `unicast_peer { … }`: advertisements go to each of these instead of
    /// the multicast group, and only theirs are taken.
    public var unicastPeers: [IPAddress] = []
    /// `unicast_src_ip`: the advertisements' source (else the interface's address).
    public var unicastSource: IPAddress?

    public init(name: String) { self.name = name }

    /// Everything it owns while master.
    public var ownedAddresses: [IPAddress] { addresses + excludedAddresses }
}

/// VRRP version 2's authentication, as keepalived 2.x speaks it. The key
/// is `auth_pass`'s first 8 bytes, zero-padded.
public enum VRRPAuthentication: Sendable, Hashable, Codable {
    /// `auth_type PASS`: RFC 3768's simple text password, in every advertisement (type 1).
    case password([UInt8])
    /// `auth_type AH`: an IPsec authentication header (RFC 2402, HMAC-MD5-96
    /// keyed with the password) before the advertisement (type 2).
    case header(key: [UInt8])

    public init(type: String, pass: String) {
        let key = Array((Array(pass.utf8.prefix(8)) + [UInt8](repeating: 0, count: 8)).prefix(8))
        self = type == "AH" ? .header(key: key) : .password(key)
    }

    /// The advertisement's Auth Type field.
    public var type: UInt8 {
        switch self {
        case .password: 1
        case .header: 2
        }
    }

    public var key: [UInt8] {
        switch self {
        case .password(let k), .header(let k): k
        }
    }
}

/// A `vrrp_script` block: a command run every `interval` seconds (killed
/// after `timeout`), OK after `rise` successes in a row, failed after
/// `fall` failures in a row (failed from the start with `init_fail`).
public struct VRRPScript: Sendable, Hashable, Codable {
    public var name: String
    public var command: String
    public var interval: Double = 1
    public var timeout: Double
    /// Priority moved while OK (positive) or while failed (negative); 0:
    /// failed puts the instance in FAULT.
    public var weight: Int = 0
    public var reverse = false
    public var rise = 1
    public var fall = 1
    public var user: String?
    public var initiallyFailed = false

    public init(name: String, command: String, interval: Double = 1, timeout: Double? = nil) {
        self.name = name
        self.command = command
        self.interval = interval
        self.timeout = timeout ?? interval
    }
}

/// A `vrrp_sync_group`: instances that change state together, and the
/// scripts run when the group does.
public struct VRRPSyncGroup: Sendable, Hashable, Codable {
    public var name: String
    public var instances: [String]
    public var notifyMaster: String?
    public var notifyBackup: String?
    public var notifyFault: String?
    /// `notify`: called with `GROUP <name> <state> <priority 0>`, as keepalived.
    public var notify: String?
}

/// A `track_script`, `track_interface`, `track_process` or `track_file`
/// entry: what it tracks, and its weight (for a script, process or file,
/// the one that overrides its block's own), reversed or not.
public struct Tracked: Sendable, Hashable, Codable {
    public var name: String
    public var weight: Int?
    public var reverse: Bool?

    public init(name: String, weight: Int? = nil, reverse: Bool? = nil) {
        self.name = name
        self.weight = weight
        self.reverse = reverse
    }
}

/// A `vrrp_track_process` block: whether enough processes of a name run
/// (at least `quorum`, at most `quorumMax`), as keepalived counts them:
/// by `/proc/PID/comm`, or with `full_command` (implied by parameters or
/// `param_match`) by the command line's first word and, when given, its
/// parameters. Zombies do not count.
public struct VRRPTrackedProcess: Sendable, Hashable, Codable {
    public enum ParameterMatch: String, Sendable, Hashable, Codable {
        /// Exactly these parameters (none, when none are given).
        case exact
        /// These parameters first, any after.
        case partial
        /// These parameters first, the last one a prefix.
        case initial
    }
    public var name: String
    public var process: String
    public var parameters: [String] = []
    /// nil: parameters are not looked at.
    public var parameterMatch: ParameterMatch?
    public var fullCommand = false
    public var weight = 0
    public var reverse = false
    public var quorum = 1
    public var quorumMax = Int(UInt32.max)
    /// Seconds the quorum must hold after it is gained, or stay lost after it is lost, before the verdict changes.
    public var forkDelay: Double = 0
    public var terminateDelay: Double = 0

    public init(name: String, process: String) {
        self.name = name
        self.process = process
    }

    /// Whether a process of this `comm` and command line (its NUL-separated words) counts.
    public func matches(comm: String, commandLine: [String]) -> Bool {
        guard fullCommand else { return comm == process }
        guard commandLine.first == process else { return false }
        guard let parameterMatch else { return true }
        let given = Array(commandLine.dropFirst())
        switch parameterMatch {
        case .exact: return given == parameters
        case .partial: return given.count >= parameters.count && Array(given.prefix(parameters.count)) == parameters
        case .initial:
            guard let last = parameters.last else { return true }
            return given.count >= parameters.count && Array(given.prefix(parameters.count - 1)) == parameters.dropLast()
                && given[parameters.count - 1].hasPrefix(last)
        }
    }

    public func hasQuorum(_ running: Int) -> Bool { running >= quorum && running <= quorumMax }
}

/// A `track_file` (or `vrrp_track_file`) block: the number the file
/// holds, times the weight; `init_file` writes `initial` at start if the
/// file is missing (always, with `overwrite`).
public struct TrackedFile: Sendable, Hashable, Codable {
    public var name: String
    public var path: String
    public var weight = 1
    public var reverse = false
    public var initial: Int?
    public var overwrite = false

    /// `init_file`, at start: whether it wrote the file.
    public func initialize() throws(SystemError) -> Bool {
        guard let initial, overwrite || !KernelFile.exists(path) else { return false }
        try KernelFile.write(path, "\(initial)\n", create: true)
        return true
    }

    /// keepalived's reading: with weight 0 a non-zero value is a fault;
    /// otherwise value × weight moves the priority, and at −254 or below
    /// it is a fault.
    public static func effect(value: Int, weight: Int, reverse: Bool) -> (delta: Int, fault: Bool) {
        if weight == 0 { return (0, (value != 0) != reverse) }
        // keepalived reads a 32-bit number; weights are within ±254.
        let s = max(Int(Int32.min), min(Int(Int32.max), value)) * weight * (reverse ? -1 : 1)
        return s <= -254 ? (0, true) : (min(s, 253), false)
    }
}

extension VRRPScript {
    /// How a tracked script's verdict or a tracked interface's state moves
    /// an instance, as keepalived: a positive weight is added while it is
    /// OK (up), a negative one while it has failed (down), and with weight
    /// 0 a failure puts the instance in FAULT.
    /// `reverse` turns the adjustment around: a positive weight is
    /// subtracted while OK, a negative one added while failed, and weight
    /// 0 is a fault while OK.
    public static func effect(weight: Int, reverse: Bool = false, ok: Bool) -> (delta: Int, fault: Bool) {
        if weight == 0 { return (0, ok == reverse) }
        let w = reverse ? -weight : weight
        return (weight > 0 ? (ok ? w : 0) : (ok ? 0 : w), false)
    }
}

/// `lvs_sync_daemon IF INSTANCE [id N] [maxlen N] [port N] [ttl N] [group A]`
/// of `global_defs`: the sync daemon follows the instance, master while it is.
public struct SyncDaemonTie: Sendable, Hashable {
    public var daemon: SyncDaemonConfiguration
    public var instance: String?
    /// `id` given: otherwise the instance's virtual router id is the sync id, as keepalived does.
    public var explicitID: Bool
}

/// keepalived.conf's director-HA part: VRRP instances and the sync daemon tie.
public struct HighAvailabilityConfiguration: Sendable, Equatable {
    public var instances: [VRRPInstanceConfiguration] = []
    public var sync: SyncDaemonTie?
    /// The `vrrp_script` blocks some instance tracks.
    public var scripts: [VRRPScript] = []
    public var syncGroups: [VRRPSyncGroup] = []
    /// The `vrrp_track_process` and `track_file` blocks some instance tracks.
    public var processes: [VRRPTrackedProcess] = []
    public var files: [TrackedFile] = []

    public init(instances: [VRRPInstanceConfiguration] = [], sync: SyncDaemonTie? = nil) {
        self.instances = instances
        self.sync = sync
    }

    /// The sync daemon's settings for an instance's state.
    public func syncDaemon(master: Bool) -> SyncDaemonConfiguration? {
        guard var d = sync?.daemon else { return nil }
        d.role = master ? .master : .backup
        if sync?.explicitID == false, let name = sync?.instance, let i = instances.first(where: { $0.name == name }) {
            d.syncID = i.virtualRouterID
        }
        return d
    }

    public static func parse(_ config: KeepalivedConfiguration, file: String) throws(ConfigurationError) -> HighAvailabilityConfiguration {
        var ha = HighAvailabilityConfiguration()
        var version = 2
        if let g = config.globalDefinitions {
            if let v = g.first("vrrp_version") {
                guard let n = Int(v.arguments.first ?? ""), n == 2 || n == 3 else { throw error(v, file, "expects 2 or 3") }
                version = n
            }
            if let s = g.first("lvs_sync_daemon") { ha.sync = try syncTie(s, file: file) }
        }
        for b in config.vrrpInstances where b.keyword == "vrrp_instance" {
            ha.instances.append(try instance(b, version: version, file: file))
            // keepalived 1.x's form, still read by 2.x: the instance's own sync daemon on that interface.
            if let s = b.first("lvs_sync_daemon_interface") {
                guard let interface = s.arguments.first else { throw error(s, file, "expects an interface") }
                guard ha.sync == nil else { throw error(s, file, "one sync daemon only: lvs_sync_daemon or lvs_sync_daemon_interface, once") }
                ha.sync = SyncDaemonTie(daemon: SyncDaemonConfiguration(interface: interface), instance: b.arguments.first, explicitID: false)
            }
        }
        for i in ha.instances
        where ha.instances.contains(where: { $0.name != i.name && $0.interface == i.interface && $0.virtualRouterID == i.virtualRouterID }) {
            throw ConfigurationError(
                file: file, line: 0, keyword: "vrrp_instance", message: "\(i.name): virtual_router_id \(i.virtualRouterID) is used twice on \(i.interface)")
        }
        for b in config.vrrpInstances where b.keyword == "vrrp_script" {
            let s = try script(b, file: file)
            guard !ha.scripts.contains(where: { $0.name == s.name }) else { throw error(b, file, "\(s.name): defined twice") }
            ha.scripts.append(s)
        }
        for i in ha.instances {
            for t in i.trackScripts where !ha.scripts.contains(where: { $0.name == t.name }) {
                throw ConfigurationError(file: file, line: 0, keyword: "track_script", message: "\(i.name): no vrrp_script named \(t.name)")
            }
        }
        ha.scripts.removeAll { s in !ha.instances.contains { $0.trackScripts.contains { $0.name == s.name } } }
        var processNames = Set<String>()
        for b in config.vrrpInstances where b.keyword == "vrrp_track_process" {
            let p = try trackedProcess(b, file: file)
            guard processNames.insert(p.name).inserted else { throw error(b, file, "\(p.name): defined twice") }
            if ha.instances.contains(where: { $0.trackProcesses.contains { $0.name == p.name } }) { ha.processes.append(p) }
        }
        for (name, b) in config.trackFiles.sorted(by: { $0.key < $1.key }) where ha.instances.contains(where: { $0.trackFiles.contains { $0.name == name } }) {
            ha.files.append(try trackedFile(b, file: file))
        }
        for i in ha.instances {
            for t in i.trackProcesses where !ha.processes.contains(where: { $0.name == t.name }) {
                throw ConfigurationError(file: file, line: 0, keyword: "track_process", message: "\(i.name): no vrrp_track_process named \(t.name)")
            }
            for t in i.trackFiles where !ha.files.contains(where: { $0.name == t.name }) {
                throw ConfigurationError(file: file, line: 0, keyword: "track_file", message: "\(i.name): no track_file named \(t.name)")
            }
        }
        for b in config.vrrpInstances where b.keyword == "vrrp_sync_group" {
            guard let name = b.arguments.first, let members = b.first("group")?.children.map(\.keyword), members.count >= 2 else {
                throw error(b, file, "expects a name and a group of two instances or more")
            }
            for m in members where !ha.instances.contains(where: { $0.name == m }) { throw error(b, file, "\(name): no vrrp_instance named \(m)") }
            if let taken = members.first(where: { m in ha.syncGroups.contains { $0.instances.contains(m) } }) {
                throw error(b, file, "\(name): \(taken) is already in a sync group")
            }
            func command(_ k: String) -> String? { b.first(k).map { $0.arguments.joined(separator: " ") }.flatMap { $0.isEmpty ? nil : $0 } }
            ha.syncGroups.append(
                VRRPSyncGroup(
                    name: name, instances: members, notifyMaster: command("notify_master"), notifyBackup: command("notify_backup"),
                    notifyFault: command("notify_fault"), notify: command("notify")))
        }
        if let name = ha.sync?.instance, !ha.instances.contains(where: { $0.name == name }) {
            throw ConfigurationError(file: file, line: 0, keyword: "lvs_sync_daemon", message: "no vrrp_instance named \(name)")
        }
        return ha
    }

    static func error(_ b: ConfigBlock, _ file: String, _ message: String) -> ConfigurationError {
        ConfigurationError(file: file, line: b.line, keyword: b.keyword, message: message)
    }

    static func script(_ b: ConfigBlock, file: String) throws(ConfigurationError) -> VRRPScript {
        guard let name = b.arguments.first else { throw error(b, file, "expects a name") }
        guard let command = b.first("script")?.arguments.joined(separator: " "), !command.isEmpty else { throw error(b, file, "\(name): no script") }
        func number(_ keyword: String, _ range: ClosedRange<Double>) throws(ConfigurationError) -> Double? {
            guard let c = b.first(keyword) else { return nil }
            guard let v = Double(c.arguments.first ?? ""), range.contains(v) else { throw error(c, file, "expects \(range.lowerBound) to \(range.upperBound)") }
            return v
        }
        let interval = try number("interval", 0.01...86400) ?? 1
        var s = VRRPScript(name: name, command: command, interval: interval, timeout: try number("timeout", 0.01...86400))
        if let w = b.first("weight") {
            let (v, reverse) = try weight(w, file: file, limit: 253)
            (s.weight, s.reverse) = (v, reverse ?? false)
        }
        s.rise = Int(try number("rise", 1...1000) ?? 1)
        s.fall = Int(try number("fall", 1...1000) ?? 1)
        s.user = b.first("user")?.arguments.first
        s.initiallyFailed = b.first("init_fail") != nil
        return s
    }

    static func syncTie(_ b: ConfigBlock, file: String) throws(ConfigurationError) -> SyncDaemonTie {
        var args = b.arguments[...]
        guard let interface = args.popFirst() else { throw error(b, file, "expects an interface") }
        var d = SyncDaemonConfiguration(interface: interface)
        var instance: String? = nil
        var explicitID = false
        if let next = args.first, !["id", "maxlen", "port", "ttl", "group"].contains(next) { instance = String(args.popFirst()!) }
        while let key = args.popFirst() {
            guard let value = args.popFirst() else { throw error(b, file, "\(key) expects a value") }
            switch key {
            case "id":
                guard let n = UInt8(value) else { throw error(b, file, "id expects 0-255") }
                d.syncID = n
                explicitID = true
            case "maxlen":
                guard let n = Int(value), (1...65507).contains(n) else { throw error(b, file, "maxlen expects 1-65507") }
                d.maxLength = n
            case "port":
                guard let n = UInt16(value), n > 0 else { throw error(b, file, "port expects 1-65535") }
                d.port = n
            case "ttl":
                guard let n = UInt8(value), n > 0 else { throw error(b, file, "ttl expects 1-255") }
                d.ttl = n
            case "group":
                guard let a = IPAddress(value), a.isMulticast else { throw error(b, file, "group expects a multicast address") }
                d.group = a
            default: throw error(b, file, "unknown option '\(key)'")
            }
        }
        return SyncDaemonTie(daemon: d, instance: instance, explicitID: explicitID)
    }

    /// `weight W [reverse|noreverse]`, the weight within ±`limit`; nil: neither word.
    static func weight(_ w: ConfigBlock, file: String, limit: Int) throws(ConfigurationError) -> (Int, Bool?) {
        guard let v = Int(w.arguments.first ?? ""), (-limit...limit).contains(v), w.arguments.count == 1 || ["reverse", "noreverse"].contains(w.arguments[1])
        else { throw error(w, file, "expects -\(limit) to \(limit), then reverse or noreverse") }
        return (v, w.arguments.count > 1 ? w.arguments[1] == "reverse" : nil)
    }

    /// `track_script`, `track_interface`, `track_process` or `track_file`:
    /// one name per line, each with an optional `weight W [reverse]`.
    static func tracked(_ c: ConfigBlock, file: String) throws(ConfigurationError) -> [Tracked] {
        var out: [Tracked] = []
        for t in c.children {
            var tracked = Tracked(name: t.keyword)
            if t.arguments.first == "weight" {
                let w = ConfigBlock(keyword: "weight", arguments: Array(t.arguments.dropFirst()), children: [], line: t.line)
                let (v, reverse) = try weight(w, file: file, limit: c.keyword == "track_script" || c.keyword == "track_interface" ? 253 : 254)
                tracked.weight = v
                tracked.reverse = reverse
            } else if !t.arguments.isEmpty {
                throw error(t, file, "expects a name, then weight W")
            }
            out.append(tracked)
        }
        return out
    }

    static func trackedProcess(_ b: ConfigBlock, file: String) throws(ConfigurationError) -> VRRPTrackedProcess {
        guard let name = b.arguments.first else { throw error(b, file, "expects a name") }
        guard let words = b.first("process")?.arguments, let command = words.first else { throw error(b, file, "\(name): no process") }
        var p = VRRPTrackedProcess(name: name, process: command)
        func number(_ keyword: String, _ range: ClosedRange<Double>) throws(ConfigurationError) -> Double? {
            guard let c = b.first(keyword) else { return nil }
            guard let v = Double(c.arguments.first ?? ""), range.contains(v) else { throw error(c, file, "expects \(range.lowerBound) to \(range.upperBound)") }
            return v
        }
        if words.count > 1 {
            p.parameters = Array(words.dropFirst())
            p.parameterMatch = .exact
            p.fullCommand = true
        }
        if let m = b.first("param_match") {
            guard let match = m.arguments.isEmpty ? .exact : VRRPTrackedProcess.ParameterMatch(rawValue: m.arguments[0]), match != .exact || m.arguments.isEmpty
            else { throw error(m, file, "expects initial or partial") }
            p.parameterMatch = match
            p.fullCommand = true
        }
        if b.first("full_command") != nil { p.fullCommand = true }
        if let w = b.first("weight") {
            let (v, reverse) = try weight(w, file: file, limit: 254)
            (p.weight, p.reverse) = (v, reverse ?? false)
        }
        if let q = try number("quorum", 1...65535) { p.quorum = Int(q) }
        if let q = try number("quorum_max", 0...65535) {
            guard Int(q) >= p.quorum || (q == 0 && b.first("quorum") == nil) else { throw error(b, file, "\(name): quorum_max is less than quorum") }
            p.quorumMax = Int(q)
            if q == 0 { p.quorum = 0 }
        }
        if let d = try number("delay", 0.000001...3600) { (p.forkDelay, p.terminateDelay) = (d, d) }
        if let d = try number("fork_delay", 0.000001...3600) { p.forkDelay = d }
        if let d = try number("terminate_delay", 0.000001...3600) { p.terminateDelay = d }
        return p
    }

    static func trackedFile(_ b: ConfigBlock, file: String) throws(ConfigurationError) -> TrackedFile {
        guard let name = b.arguments.first, let path = b.first("file")?.arguments.first else { throw error(b, file, "needs a name and a file") }
        var f = TrackedFile(name: name, path: path)
        if let w = b.first("weight") {
            let (v, reverse) = try weight(w, file: file, limit: Int(Int32.max))
            (f.weight, f.reverse) = (v, reverse ?? false)
        }
        if let i = b.first("init_file") {
            var args = i.arguments[...]
            if let v = args.first, let n = Int(v) {
                f.initial = n
                args.removeFirst()
            } else {
                f.initial = 0
            }
            if let o = args.popFirst() {
                guard o == "overwrite", args.isEmpty else { throw error(i, file, "expects a number, then overwrite") }
                f.overwrite = true
            }
        }
        return f
    }

    static func instance(_ b: ConfigBlock, version: Int, file: String) throws(ConfigurationError) -> VRRPInstanceConfiguration {
        guard let name = b.arguments.first else { throw error(b, file, "expects a name") }
        var i = VRRPInstanceConfiguration(name: name)
        i.version = version
        func addresses(_ c: ConfigBlock) throws(ConfigurationError) -> [IPAddress] {
            var out: [IPAddress] = []
            for a in c.children {
                // `198.51.100.1/24 dev eth0 label eth0:1`: the address is what lvsd owns.
                let text = a.keyword.split(separator: "/").first.map(String.init) ?? a.keyword
                guard let ip = IPAddress(text) else { throw error(a, file, "not an address") }
                out.append(ip)
            }
            return out
        }
        func seconds(_ c: ConfigBlock) throws(ConfigurationError) -> Double {
            guard let v = Double(c.arguments.first ?? ""), v >= 0, v <= 40.95 * 100 else { throw error(c, file, "expects seconds") }
            return v
        }
        for c in b.children {
            switch c.keyword {
            case "state":
                guard let s = VRRPInstanceConfiguration.State(rawValue: c.arguments.first ?? "") else { throw error(c, file, "expects MASTER or BACKUP") }
                i.state = s
            case "interface": i.interface = c.arguments.first ?? ""
            case "virtual_router_id":
                guard let n = UInt8(c.arguments.first ?? ""), n > 0 else { throw error(c, file, "expects 1-255") }
                i.virtualRouterID = n
            case "priority":
                guard let n = UInt8(c.arguments.first ?? ""), n > 0 else { throw error(c, file, "expects 1-255") }
                i.priority = n
            case "advert_int":
                let s = try seconds(c)
                guard s >= 0.01, s <= 40.95 else { throw error(c, file, "expects 0.01-40.95 seconds") }
                i.advertisementInterval = UInt16((s * 100).rounded())
            case "virtual_ipaddress": i.addresses = try addresses(c)
            case "virtual_ipaddress_excluded": i.excludedAddresses = try addresses(c)
            case "nopreempt": i.preempt = false
            case "preempt_delay": i.preemptDelay = UInt64(try seconds(c) * 1000)
            case "track_interface": i.trackInterfaces = try tracked(c, file: file)
            case "track_script": i.trackScripts = try tracked(c, file: file)
            case "track_process": i.trackProcesses = try tracked(c, file: file)
            case "track_file": i.trackFiles = try tracked(c, file: file)
            case "notify_master": i.notifyMaster = c.arguments.joined(separator: " ")
            case "notify_backup": i.notifyBackup = c.arguments.joined(separator: " ")
            case "notify_fault": i.notifyFault = c.arguments.joined(separator: " ")
            case "notify_stop": i.notifyStop = c.arguments.joined(separator: " ")
            case "notify": i.notify = c.arguments.joined(separator: " ")
            case "version":
                guard let n = Int(c.arguments.first ?? ""), n == 2 || n == 3 else { throw error(c, file, "expects 2 or 3") }
                i.version = n
            case "unicast_peer":
                for a in c.children {
                    guard let ip = IPAddress(a.keyword) else { throw error(a, file, "not an address") }
                    i.unicastPeers.append(ip)
                }
            case "unicast_src_ip":
                guard let ip = IPAddress(c.arguments.first ?? "") else { throw error(c, file, "expects an address") }
                i.unicastSource = ip
            case "authentication":
                guard let t = c.first("auth_type") else { throw error(c, file, "expects auth_type PASS or AH") }
                guard let type = t.arguments.first, type == "PASS" || type == "AH" else { throw error(t, file, "expects PASS or AH") }
                guard let pass = c.first("auth_pass")?.arguments.first, !pass.isEmpty else { throw error(c, file, "auth_type \(type) needs auth_pass") }
                i.authentication = VRRPAuthentication(type: type, pass: pass)
            default: break
            }
        }
        guard !i.interface.isEmpty else { throw error(b, file, "\(name): no interface") }
        guard i.virtualRouterID != 0 else { throw error(b, file, "\(name): no virtual_router_id") }
        guard !i.addresses.isEmpty else { throw error(b, file, "\(name): no virtual_ipaddress") }
        guard Set(i.addresses.map(\.isIPv6)).count == 1 else {
            throw error(b, file, "\(name): virtual_ipaddress mixes IPv4 and IPv6 (use two instances, or virtual_ipaddress_excluded)")
        }
        // VRRP over IPv6 is version 3 only; keepalived makes the same choice.
        if i.addresses[0].isIPv6 { i.version = 3 }
        let family = i.addresses[0].isIPv6
        if i.unicastPeers.contains(where: { $0.isIPv6 != family }) || i.unicastSource.map({ $0.isIPv6 != family }) == true {
            throw error(b, file, "\(name): unicast_peer and unicast_src_ip must be of the virtual addresses' family")
        }
        if i.version == 2 && i.advertisementInterval % 100 != 0 { throw error(b, file, "\(name): VRRP version 2 takes whole seconds for advert_int") }
        // Version 3 has no authentication: keepalived ignores it there too (the audit says so).
        if i.version == 3 { i.authentication = nil }
        return i
    }
}

extension ConfigurationSources {
    /// The VRRP instances and the sync daemon tie of the keepalived.conf files.
    public func loadHighAvailability() throws(ConfigurationError) -> HighAvailabilityConfiguration {
        var ha = HighAvailabilityConfiguration()
        for file in keepalived {
            let one = try HighAvailabilityConfiguration.parse(try KeepalivedConfiguration.parse(try Self.read(file), file: file), file: file)
            ha.instances += one.instances
            ha.scripts += one.scripts
            ha.syncGroups += one.syncGroups
            ha.processes += one.processes
            ha.files += one.files
            ha.sync = one.sync ?? ha.sync
        }
        return ha
    }

    /// Every `track_file` block, tracked by an instance, a FILE_CHECK or nothing (for `init_file`).
    public func loadTrackFiles() throws(ConfigurationError) -> [TrackedFile] {
        var out: [TrackedFile] = []
        for file in keepalived {
            for (_, b) in try KeepalivedConfiguration.parse(try Self.read(file), file: file).trackFiles.sorted(by: { $0.key < $1.key }) {
                out.append(try HighAvailabilityConfiguration.trackedFile(b, file: file))
            }
        }
        return out
    }
}
