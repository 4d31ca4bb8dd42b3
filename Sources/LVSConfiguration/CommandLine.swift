import LVSCore
import LVSPacket
import LVSSystem

/// ipvsadm's commands, in its own order (`CMD_ADD` … `CMD_ZERO`), then
/// DPVS's local-address commands, then lvsadm's `--compare`.
public enum AdminCommand: Int, Sendable, CaseIterable {
    case addService = 0
    case editService, deleteService, flush, list, addServer, deleteServer, editServer, setTimeouts
    case startDaemon, stopDaemon, restore, save, zero
    case addLocalAddress, deleteLocalAddress, getLocalAddress
    case compare

    /// `cmdnames[]`, as ipvsadm's messages name them.
    public var name: String {
        [
            "add-service", "edit-service", "delete-service", "flush", "list", "add-server", "delete-server", "edit-server", "set",
            "start-daemon", "stop-daemon", "restore", "save", "zero", "add-laddr", "del-laddr", "get-laddr", "compare",
        ][rawValue]
    }
}

/// ipvsadm's options that its compatibility table knows (`OPTC_*`), plus
/// DPVS's `-z` and `-j`, and lvsadm's `--json`, `--drops` and `--health`.
public enum AdminOption: Int, Sendable, CaseIterable {
    case numeric = 0
    case connection, service, scheduler, persistent, netmask, server, forward, weight, upperThreshold
    case lowerThreshold, mcastInterface, timeout, daemon, stats, rate, thresholds, persistentConnections, noSort, syncID
    case exact, onePacket, persistenceEngine, schedulerFlags, mcastGroup, mcastPort, mcastTTL, syncMaxLength
    case tunnelInfo, tunnelType, tunnelPort, tunnelNoChecksum, tunnelChecksum, tunnelRemoteChecksum
    case localAddress, json, drops, synproxy, health, proxyProtocol

    /// `optnames[]`.
    public var name: String {
        [
            "numeric", "connection", "service-address", "scheduler", "persistent", "netmask", "real-server", "forwarding-method",
            "weight", "u-threshold", "l-threshold", "mcast-interface", "timeout", "daemon", "stats", "rate", "thresholds",
            "persistent-conn", "nosort", "syncid", "exact", "ops", "pe", "sched-flags", "mcast-group", "mcast-port", "mcast-ttl",
            "sync-maxlen", "tun-info", "tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum", "laddr", "json", "drops", "synproxy", "health",
            "proxy-protocol",
        ][rawValue]
    }
}

/// ipvsadm's `commands_v_options`: '+' required, 'x' illegal, '1' at most
/// one of them, ' ' optional. Rows by command, columns by option; the last
/// six columns (laddr, json, drops, synproxy, health, proxy-protocol) are lvsadm's and DPVS's.
let compatibility: [String] = [
    // n  c  svc s  p  M  r  fwd w  x  y  mc to dm st rt th pc ns sid ex op pe b  gr po tt sz ti ty tp nc cs rc la js dr sy he pp
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxxxxx x ",  // add-service
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxxxxx x ",  // edit-service
    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  // delete-service
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  // flush
    " 11xxxxxxxxx11       xxxxxxx xxxxxx  x x",  // list
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     xxxxxx",  // add-server
    "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  // delete-server
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     xxxxxx",  // edit-server
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  // set
    "xxxxxxxxxxx xxxxxxx xxxx    xxxxxxxxxxxx",  // start-daemon
    "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxxxxxxxx",  // stop-daemon
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  // restore
    " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  // save
    "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  // zero
    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx+xxxxx",  // add-laddr
    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx+xxxxx",  // del-laddr
    " x xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx xxxx",  // get-laddr
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",  // compare
]

/// How a listing prints (`FMT_*`).
public struct ListFormat: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let numeric = ListFormat(rawValue: 0x0001)
    public static let rule = ListFormat(rawValue: 0x0002)
    public static let stats = ListFormat(rawValue: 0x0004)
    public static let rate = ListFormat(rawValue: 0x0008)
    public static let thresholds = ListFormat(rawValue: 0x0010)
    public static let persistentConnections = ListFormat(rawValue: 0x0020)
    public static let noSort = ListFormat(rawValue: 0x0040)
    public static let exact = ListFormat(rawValue: 0x0080)
    public static let tunnelInfo = ListFormat(rawValue: 0x0100)
}

/// A wrong command line: ipvsadm's message and exit status.
public struct UsageError: Error, Equatable, Sendable {
    public var message: String
    public var exitStatus: Int32
    public init(_ message: String, exitStatus: Int32 = 2) {
        self.message = message
        self.exitStatus = exitStatus
    }
}

/// One parsed command line (or one line of a rules file).
public struct Invocation: Sendable, Equatable {
    public var command: AdminCommand?
    public var help = false
    public var version = false
    public var options: Set<AdminOption> = []
    public var format: ListFormat = []
    public var service: ServiceSpec?
    public var server: ServerSpec?
    public var timeouts = Timeouts(tcp: 0, tcpFin: 0, udp: 0)
    public var localAddress: IPAddress?
    /// `--start-daemon`/`--stop-daemon` state (master|backup).
    public var daemonState: String?
    /// The daemon options (`--mcast-interface`, `--syncid`, …).
    public var syncDaemon = SyncDaemonConfiguration()
    public var json = false
    public var socketPath: String?
    /// `--compare FILE`: another director's `-S -n` (`-`: standard input).
    public var comparedWith: String?
    public init() {}
}

/// ipvsadm's command line, option for option (popt semantics: short options
/// cluster, `-p` takes an optional value, `--name=value` works).
public enum AdminCommandLine {
    enum Argument { case none, required, optional }

    struct Spec {
        var long: String
        var short: Character?
        var argument: Argument
    }

    static let specs: [Spec] = [
        Spec(long: "add-service", short: "A", argument: .none), Spec(long: "edit-service", short: "E", argument: .none),
        Spec(long: "delete-service", short: "D", argument: .none), Spec(long: "clear", short: "C", argument: .none),
        Spec(long: "list", short: "L", argument: .none), Spec(long: "list", short: "l", argument: .none),
        Spec(long: "zero", short: "Z", argument: .none), Spec(long: "add-server", short: "a", argument: .none),
        Spec(long: "edit-server", short: "e", argument: .none), Spec(long: "delete-server", short: "d", argument: .none),
        Spec(long: "set", short: nil, argument: .none), Spec(long: "help", short: "h", argument: .none),
        Spec(long: "version", short: "v", argument: .none), Spec(long: "restore", short: "R", argument: .none),
        Spec(long: "save", short: "S", argument: .none), Spec(long: "start-daemon", short: nil, argument: .required),
        Spec(long: "stop-daemon", short: nil, argument: .required), Spec(long: "tcp-service", short: "t", argument: .required),
        Spec(long: "udp-service", short: "u", argument: .required), Spec(long: "sctp-service", short: nil, argument: .required),
        Spec(long: "fwmark-service", short: "f", argument: .required), Spec(long: "scheduler", short: "s", argument: .required),
        Spec(long: "persistent", short: "p", argument: .optional), Spec(long: "netmask", short: "M", argument: .required),
        Spec(long: "real-server", short: "r", argument: .required), Spec(long: "masquerading", short: "m", argument: .none),
        Spec(long: "ipip", short: "i", argument: .none), Spec(long: "gatewaying", short: "g", argument: .none),
        Spec(long: "weight", short: "w", argument: .required), Spec(long: "u-threshold", short: "x", argument: .required),
        Spec(long: "l-threshold", short: "y", argument: .required), Spec(long: "numeric", short: "n", argument: .none),
        Spec(long: "connection", short: "c", argument: .none), Spec(long: "mcast-interface", short: nil, argument: .required),
        Spec(long: "syncid", short: nil, argument: .required), Spec(long: "timeout", short: nil, argument: .none),
        Spec(long: "daemon", short: nil, argument: .none), Spec(long: "stats", short: nil, argument: .none),
        Spec(long: "rate", short: nil, argument: .none), Spec(long: "thresholds", short: nil, argument: .none),
        Spec(long: "persistent-conn", short: nil, argument: .none), Spec(long: "nosort", short: nil, argument: .none),
        Spec(long: "sort", short: nil, argument: .none), Spec(long: "exact", short: "X", argument: .none),
        Spec(long: "ipv6", short: "6", argument: .none), Spec(long: "ops", short: "o", argument: .none),
        Spec(long: "pe", short: nil, argument: .required), Spec(long: "sched-flags", short: "b", argument: .required),
        Spec(long: "mcast-group", short: nil, argument: .required), Spec(long: "mcast-port", short: nil, argument: .required),
        Spec(long: "mcast-ttl", short: nil, argument: .required), Spec(long: "sync-maxlen", short: nil, argument: .required),
        Spec(long: "tun-info", short: nil, argument: .none), Spec(long: "tun-type", short: nil, argument: .required),
        Spec(long: "tun-port", short: nil, argument: .required), Spec(long: "tun-nocsum", short: nil, argument: .none),
        Spec(long: "tun-csum", short: nil, argument: .none), Spec(long: "tun-remcsum", short: nil, argument: .none),
        // DPVS: FULLNAT servers and local addresses.
        Spec(long: "fullnat", short: nil, argument: .none), Spec(long: "add-laddr", short: "P", argument: .none),
        Spec(long: "del-laddr", short: "Q", argument: .none), Spec(long: "get-laddr", short: "G", argument: .none),
        Spec(long: "laddr", short: "z", argument: .required),
        // lvsadm's own.
        Spec(long: "json", short: nil, argument: .none), Spec(long: "drops", short: nil, argument: .none),
        Spec(long: "synproxy", short: "j", argument: .required), Spec(long: "health", short: nil, argument: .none),
        Spec(long: "proxy-protocol", short: nil, argument: .required),
        Spec(long: "socket", short: nil, argument: .required), Spec(long: "compare", short: nil, argument: .required),
    ]

    /// 6 × 60 s, libipvs's IPVS_SVC_PERSISTENT_TIMEOUT.
    public static let defaultPersistence: UInt32 = 360
    static let maxTimeout = 86400 * 31

    /// Parses `arguments` (without the program name).
    public static func parse(_ arguments: [String]) throws(UsageError) -> Invocation {
        // `-b` is DPVS's FULLNAT switch for servers and ipvsadm's scheduler
        // flags for services: the command decides, so find it first.
        let serverCommand = arguments.contains { a in
            a == "--add-server" || a == "--edit-server" || a == "--delete-server"
                || (a.hasPrefix("-") && !a.hasPrefix("--") && a.count > 1 && "aed".contains(a.dropFirst().first!))
        }
        var events: [(Spec, String?, String)] = []
        var leftovers: [String] = []
        var i = 0
        var onlyArguments = false
        func spec(long: String) -> Spec? { specs.first { $0.long == long } }
        while i < arguments.count {
            let arg = arguments[i]
            i += 1
            if onlyArguments || arg == "-" || !arg.hasPrefix("-") {
                leftovers.append(arg)
                continue
            }
            if arg == "--" {
                onlyArguments = true
                continue
            }
            if arg.hasPrefix("--") {
                let body = arg.dropFirst(2)
                let name = body.split(separator: "=", maxSplits: 1).first.map(String.init) ?? ""
                let inline = body.contains("=") ? String(body.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[1]) : nil
                guard let s = spec(long: name) else { throw UsageError("\(arg): unknown option", exitStatus: 255) }
                switch s.argument {
                case .none:
                    if inline != nil { throw UsageError("\(arg): option does not take an argument", exitStatus: 255) }
                    events.append((s, nil, arg))
                case .required:
                    if let inline {
                        events.append((s, inline, arg))
                    } else {
                        guard i < arguments.count else { throw UsageError("\(arg): missing argument", exitStatus: 255) }
                        events.append((s, arguments[i], arg))
                        i += 1
                    }
                case .optional:
                    if let inline {
                        events.append((s, inline, arg))
                    } else if i < arguments.count && !arguments[i].hasPrefix("-") {
                        events.append((s, arguments[i], arg))
                        i += 1
                    } else {
                        events.append((s, nil, arg))
                    }
                }
                continue
            }
            var chars = Array(arg.dropFirst())
            while !chars.isEmpty {
                let c = chars.removeFirst()
                guard var s = specs.first(where: { $0.short == c }) else { throw UsageError("-\(c): unknown option", exitStatus: 255) }
                if c == "b" && serverCommand { s = Spec(long: "fullnat", short: "b", argument: .none) }
                switch s.argument {
                case .none:
                    events.append((s, nil, "-\(c)"))
                case .required:
                    if !chars.isEmpty {
                        events.append((s, String(chars), "-\(c)"))
                        chars = []
                    } else {
                        guard i < arguments.count else { throw UsageError("-\(c): missing argument", exitStatus: 255) }
                        events.append((s, arguments[i], "-\(c)"))
                        i += 1
                    }
                case .optional:
                    if !chars.isEmpty {
                        events.append((s, String(chars), "-\(c)"))
                        chars = []
                    } else if i < arguments.count && !arguments[i].hasPrefix("-") {
                        events.append((s, arguments[i], "-\(c)"))
                        i += 1
                    } else {
                        events.append((s, nil, "-\(c)"))
                    }
                }
            }
        }
        return try interpret(events, leftovers)
    }

    static func interpret(_ events: [(Spec, String?, String)], _ leftovers: [String]) throws(UsageError) -> Invocation {
        var inv = Invocation()
        var key: ServiceKey? = nil
        var proto: TransportProtocol = .tcp
        var ipv6 = false
        var scheduler: String? = nil
        var flagsText: String? = nil
        var persistence: UInt32? = nil
        var netmask: Int? = nil
        var pe: String? = nil
        var onePacket = false
        var synproxy = false
        var proxyProtocol: ProxyProtocol? = nil
        var serverAddress: IPAddress? = nil
        var serverPort: UInt16? = nil
        var method: ForwardingMethod = .directRouting
        var weight: Int32 = 1
        var upper: UInt32 = 0
        var lower: UInt32 = 0
        var tunnel = TunnelConfiguration()

        func setCommand(_ c: AdminCommand) throws(UsageError) {
            guard inv.command == nil else { throw UsageError("multiple commands specified") }
            inv.command = c
        }
        func setOption(_ o: AdminOption) throws(UsageError) {
            guard !inv.options.contains(o) else { throw UsageError("multiple '\(o.name)' options specified") }
            inv.options.insert(o)
        }
        func number(_ s: String, _ lo: Int, _ hi: Int) -> Int? {
            guard !s.isEmpty, s.allSatisfy(\.isNumber), let n = Int(s), n >= lo, n <= hi else { return nil }
            return n
        }

        for (spec, value, _) in events {
            let v = value ?? ""
            switch spec.long {
            case "add-service": try setCommand(.addService)
            case "edit-service": try setCommand(.editService)
            case "delete-service": try setCommand(.deleteService)
            case "clear": try setCommand(.flush)
            case "list": try setCommand(.list)
            case "zero": try setCommand(.zero)
            case "add-server": try setCommand(.addServer)
            case "edit-server": try setCommand(.editServer)
            case "delete-server": try setCommand(.deleteServer)
            case "set": try setCommand(.setTimeouts)
            case "restore": try setCommand(.restore)
            case "save": try setCommand(.save)
            case "add-laddr": try setCommand(.addLocalAddress)
            case "del-laddr": try setCommand(.deleteLocalAddress)
            case "get-laddr": try setCommand(.getLocalAddress)
            case "compare":
                try setCommand(.compare)
                inv.comparedWith = v
            case "help": inv.help = true
            case "version": inv.version = true
            case "start-daemon", "stop-daemon":
                try setCommand(spec.long == "start-daemon" ? .startDaemon : .stopDaemon)
                guard v == "master" || v == "backup" else { throw UsageError("illegal start-daemon parameter specified") }
                inv.daemonState = v
                inv.syncDaemon.role = v == "master" ? .master : .backup
            case "tcp-service", "udp-service", "sctp-service":
                try setOption(.service)
                proto = spec.long == "tcp-service" ? .tcp : spec.long == "udp-service" ? .udp : .sctp
                guard let (a, port) = parseAddressPort(v, proto: proto) else {
                    throw UsageError("illegal virtual server address[:port] specified")
                }
                key = .address(proto, a, port ?? 0)
            case "fwmark-service":
                try setOption(.service)
                guard let m = UInt32(v), m > 0 else { throw UsageError("invalid fwmark value `\(v)' specified") }
                key = .firewallMark(m, ipv6: false)
                proto = .tcp
            case "ipv6":
                guard case .firewallMark(let m, _) = key else { throw UsageError("-6 used before -f\n") }
                key = .firewallMark(m, ipv6: true)
                ipv6 = true
            case "scheduler":
                try setOption(.scheduler)
                scheduler = String(v.prefix(15))
            case "persistent":
                try setOption(.persistent)
                if let value {
                    guard let t = number(value, 1, maxTimeout) else { throw UsageError("invalid timeout value `\(value)' specified") }
                    persistence = UInt32(t)
                } else {
                    persistence = defaultPersistence
                }
            case "netmask":
                try setOption(.netmask)
                if key?.isIPv6 == true || ipv6 {
                    guard let n = Int(v), n >= 1, n <= 128 else { throw UsageError("illegal ipv6 netmask specified") }
                    netmask = n
                } else {
                    guard let n = parseNetmask(v) else { throw UsageError("illegal virtual server persistent mask specified") }
                    netmask = n
                }
            case "real-server":
                try setOption(.server)
                guard let (a, port) = parseAddressPort(v, proto: proto) else {
                    throw UsageError("illegal real server address[:port] specified")
                }
                serverAddress = a
                serverPort = port
            case "masquerading":
                try setOption(.forward)
                method = .nat
            case "ipip":
                try setOption(.forward)
                method = .tunnel
            case "gatewaying":
                try setOption(.forward)
                method = .directRouting
            case "fullnat":
                try setOption(.forward)
                method = .fullNAT
            case "weight":
                try setOption(.weight)
                guard let w = number(v, 0, 65535) else { throw UsageError("illegal weight specified") }
                weight = Int32(w)
            case "u-threshold":
                try setOption(.upperThreshold)
                guard let n = number(v, 0, Int(Int32.max)) else { throw UsageError("illegal u_threshold specified") }
                upper = UInt32(n)
            case "l-threshold":
                try setOption(.lowerThreshold)
                guard let n = number(v, 0, Int(Int32.max)) else { throw UsageError("illegal l_threshold specified") }
                lower = UInt32(n)
            case "numeric":
                try setOption(.numeric)
                inv.format.insert(.numeric)
            case "connection": try setOption(.connection)
            case "mcast-interface":
                try setOption(.mcastInterface)
                guard !v.isEmpty, v.utf8.count < 16 else { throw UsageError("illegal mcast-interface specified") }
                inv.syncDaemon.interface = v
            case "syncid":
                try setOption(.syncID)
                guard let n = number(v, 0, 255) else { throw UsageError("illegal syncid specified") }
                inv.syncDaemon.syncID = UInt8(n)
            case "mcast-group":
                try setOption(.mcastGroup)
                guard let g = IPAddress(v), g.isMulticast else { throw UsageError("illegal mcast-group specified") }
                inv.syncDaemon.group = g
            case "mcast-port":
                try setOption(.mcastPort)
                guard let n = number(v, 1, 65535) else { throw UsageError("illegal mcast-port specified") }
                inv.syncDaemon.port = UInt16(n)
            case "mcast-ttl":
                try setOption(.mcastTTL)
                guard let n = number(v, 1, 255) else { throw UsageError("illegal mcast-ttl specified") }
                inv.syncDaemon.ttl = UInt8(n)
            case "sync-maxlen":
                try setOption(.syncMaxLength)
                guard let n = number(v, 1, 65535 - 20 - 8) else { throw UsageError("illegal sync-maxlen specified") }
                inv.syncDaemon.maxLength = n
            case "timeout": try setOption(.timeout)
            case "daemon": try setOption(.daemon)
            case "stats":
                try setOption(.stats)
                inv.format.insert(.stats)
            case "rate":
                try setOption(.rate)
                inv.format.insert(.rate)
            case "thresholds":
                try setOption(.thresholds)
                inv.format.insert(.thresholds)
            case "persistent-conn":
                try setOption(.persistentConnections)
                inv.format.insert(.persistentConnections)
            case "nosort":
                try setOption(.noSort)
                inv.format.insert(.noSort)
            case "sort": break
            case "exact":
                try setOption(.exact)
                inv.format.insert(.exact)
            case "ops":
                try setOption(.onePacket)
                onePacket = true
            case "pe":
                try setOption(.persistenceEngine)
                pe = v
            case "sched-flags":
                try setOption(.schedulerFlags)
                flagsText = v
            case "tun-info":
                try setOption(.tunnelInfo)
                inv.format.insert(.tunnelInfo)
            case "tun-type":
                try setOption(.tunnelType)
                switch v {
                case "ipip": tunnel.type = .ipip
                case "gue": tunnel.type = .gue
                default: throw UsageError("illegal tunnel type specified")
                }
            case "tun-port":
                try setOption(.tunnelPort)
                guard let p = number(v, 1, 65535) else { throw UsageError("illegal tunnel port specified") }
                tunnel.port = UInt16(p)
            case "tun-nocsum":
                try setOption(.tunnelNoChecksum)
                tunnel.checksum = .none
            case "tun-csum":
                try setOption(.tunnelChecksum)
                tunnel.checksum = .checksum
            case "tun-remcsum":
                try setOption(.tunnelRemoteChecksum)
                tunnel.checksum = .remote
            case "laddr":
                try setOption(.localAddress)
                guard let a = IPAddress(v.hasPrefix("[") && v.hasSuffix("]") ? String(v.dropFirst().dropLast()) : v) else {
                    throw UsageError("illegal local address specified")
                }
                inv.localAddress = a
            case "json":
                try setOption(.json)
                inv.json = true
            case "drops": try setOption(.drops)
            case "health": try setOption(.health)
            case "synproxy":
                try setOption(.synproxy)
                switch v {
                case "enable": synproxy = true
                case "disable": synproxy = false
                default: throw UsageError("synproxy switch must be enable or disable")
                }
            case "proxy-protocol":
                try setOption(.proxyProtocol)
                guard v.lowercased() == "disable" || ProxyProtocol(name: v) != nil else {
                    throw UsageError("proxy-protocol must be disable, v1, v2, v1-insecure or v2-insecure")
                }
                proxyProtocol = ProxyProtocol(name: v)
            case "socket": inv.socketPath = v
            default: break
            }
        }
        if inv.help || inv.version { return inv }

        var rest = leftovers[...]
        if inv.command == .setTimeouts {
            guard rest.count >= 3 else { throw UsageError("--set option requires 3 timeout values") }
            var t: [UInt32] = []
            for value in rest.prefix(3) {
                guard let n = number(value, 0, maxTimeout) else { throw UsageError("invalid timeout value `\(value)' specified") }
                t.append(UInt32(n))
            }
            inv.timeouts = Timeouts(tcp: t[0], tcpFin: t[1], udp: t[2])
            rest = rest.dropFirst(3)
        }
        if let extra = rest.first { throw UsageError("unexpected argument \(extra)") }
        guard let command = inv.command else {
            throw UsageError("no command specified")
        }
        try check(command, inv.options)

        var flags: SchedulerFlags = []
        if let flagsText, command == .addService || command == .editService {
            flags = try parseSchedulerFlags(flagsText, scheduler: scheduler ?? "wlc")
        }
        if let key {
            if command == .addService || command == .editService {
                if case .address(_, _, 0) = key, persistence == nil {
                    throw UsageError("Zero port specified for non-persistent service")
                }
                if onePacket {
                    if case .address(let p, _, _) = key, p != .udp {
                        throw UsageError("One-Packet Scheduling is only for UDP virtual services")
                    }
                }
            }
            inv.service = ServiceSpec(
                key: key, scheduler: scheduler ?? "wlc", schedulerFlags: flags, persistence: persistence,
                netmask: netmask, persistenceEngine: pe, onePacket: onePacket, synproxy: synproxy,
                proxyProtocol: proxyProtocol)
        }
        if command == .addServer || command == .editServer || command == .deleteServer, let key, let serverAddress {
            var port = serverPort ?? key.port
            if command != .deleteServer {
                // DR and TUN reach the server on the service's own port.
                if case .address = key, method == .tunnel || method == .directRouting { port = key.port }
                if serverAddress.isIPv6 != key.isIPv6 && method != .tunnel {
                    throw UsageError("Different address family is allowed only for tunneling servers")
                }
                let tunnelOptions: Set<AdminOption> = [.tunnelType, .tunnelPort, .tunnelNoChecksum, .tunnelChecksum, .tunnelRemoteChecksum]
                if !inv.options.isDisjoint(with: tunnelOptions) && method != .tunnel {
                    throw UsageError("Tunnel options conflict with forward method")
                }
                try checkTunnel(tunnel.type, inv.options)
            }
            inv.server = ServerSpec(
                address: serverAddress, port: port, weight: weight, method: method,
                upperThreshold: upper, lowerThreshold: lower, tunnel: tunnel)
        }
        if command == .list {
            // -c with --persistent-conn is how ipvsadm shows persistence engine data.
            let other = !inv.options.isDisjoint(with: [.connection, .timeout, .daemon])
            if other && !inv.options.isDisjoint(with: [.stats, .rate, .thresholds, .tunnelInfo]) {
                throw UsageError("options conflicts in the list command")
            }
        }
        return inv
    }

    /// ipvsadm's `generic_opt_check`.
    static func check(_ command: AdminCommand, _ options: Set<AdminOption>) throws(UsageError) {
        let row = Array(compatibility[command.rawValue])
        try checkRules(AdminOption.allCases.map { ($0, row[$0.rawValue]) }, options, context: "the '\(command.name)' command")
    }

    /// ipvsadm's `tunnel_opt_check`: GUE needs a port and at most one checksum option; IPIP takes none.
    static func checkTunnel(_ type: TunnelType, _ options: Set<AdminOption>) throws(UsageError) {
        let columns: [AdminOption] = [.tunnelPort, .tunnelNoChecksum, .tunnelChecksum, .tunnelRemoteChecksum]
        let rules: [Character] = type == .gue ? ["+", "1", "1", "1"] : ["x", "x", "x", "x"]
        try checkRules(Array(zip(columns, rules)), options, context: "the '\(["ipip", "gue", "gre"][Int(type.rawValue)])' tunnel type")
    }

    /// One row of an ipvsadm compatibility table: '+' required, 'x' illegal,
    /// '1' at most one of them, ' ' optional.
    static func checkRules(_ row: [(AdminOption, Character)], _ options: Set<AdminOption>, context: String) throws(UsageError) {
        var first: AdminOption? = nil
        for (option, rule) in row {
            guard options.contains(option) else {
                if rule == "+" { throw UsageError("You need to supply the '\(option.name)' option for \(context)") }
                continue
            }
            if rule == "x" { throw UsageError("Illegal '\(option.name)' option with \(context)") }
            if rule == "1" {
                if let first { throw UsageError("The option '\(option.name)' conflicts with the '\(first.name)' option in \(context)") }
                first = option
            }
        }
    }

    /// `parse_sched_flags`.
    public static func parseSchedulerFlags(_ text: String, scheduler: String) throws(UsageError) -> SchedulerFlags {
        var flags: SchedulerFlags = []
        for flag in text.split(separator: ",").map(String.init) {
            switch flag {
            case "flag-1": flags.insert(.flag1)
            case "flag-2": flags.insert(.flag2)
            case "flag-3": flags.insert(.flag3)
            case "sh-fallback", "sh-port", "mh-fallback", "mh-port", "mh-sorted":
                guard scheduler == String(flag.prefix(2)) else { throw UsageError("incompatible scheduler flag `\(flag)'") }
                flags.insert(flag.hasSuffix("fallback") ? .flag1 : flag.hasSuffix("port") ? .flag2 : .flag3)
            default:
                throw UsageError("invalid scheduler flag `\(flag)'")
            }
        }
        return flags
    }

    /// `parse_service`: `host[:port]`, `[v6]:port`, a bare IPv6 address, or
    /// names (resolved through the system's resolver and services database).
    public static func parseAddressPort(_ text: String, proto: TransportProtocol) -> (IPAddress, UInt16?)? {
        if text.isEmpty || text.allSatisfy(\.isNumber) { return nil }
        var host = Substring(text)
        var port: Substring? = nil
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let after = text[text.index(after: close)...]
            guard after.hasPrefix(":") else { return nil }
            port = after.dropFirst()
            guard let a = IPv6Address(host) else { return nil }
            guard let p = parsePort(port!, proto: proto) else { return nil }
            return (.v6(a), p)
        }
        if let a = IPv6Address(host) { return (.v6(a), nil) }
        if let colon = text.lastIndex(of: ":") {
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard let address = IPv4Address(host).map(IPAddress.v4) ?? NameResolver.address(of: String(host)) else { return nil }
        guard let port else { return (address, nil) }
        guard let p = parsePort(port, proto: proto) else { return nil }
        return (address, p)
    }

    static func parsePort(_ text: Substring, proto: TransportProtocol) -> UInt16? {
        if let n = Int(text), n >= 0, n <= 65535, text.allSatisfy(\.isNumber) { return UInt16(n) }
        return NameResolver.port(of: String(text), protocolName: proto.name)
    }

    /// A dotted mask (contiguous) or a prefix length, as a prefix length.
    static func parseNetmask(_ text: String) -> Int? {
        if text.allSatisfy(\.isNumber), let n = Int(text), n <= 32 { return n }
        guard let a = IPv4Address(text) else { return nil }
        let ones = a.value.leadingZeroBitCount == 0 ? (~a.value).leadingZeroBitCount : 0
        guard ones == 32 || a.value << ones == 0 else { return nil }
        return a.value == 0 ? 0 : ones
    }
}

extension ServiceKey {
    /// The service's port (0 for firewall marks).
    public var port: UInt16 {
        if case .address(_, _, let p) = self { return p }
        return 0
    }
}
