import LVSCore
import LVSPacket
import LVSSystem

/// One `keyword args… [{ … }]` of a keepalived.conf, with its line.
public struct ConfigBlock: Sendable, Hashable {
    public var keyword: String
    public var arguments: [String]
    public var children: [ConfigBlock]
    public var line: Int

    public func first(_ keyword: String) -> ConfigBlock? { children.first { $0.keyword == keyword } }
    public func all(_ keywords: Set<String>) -> [ConfigBlock] { children.filter { keywords.contains($0.keyword) } }
}

/// The parts of a keepalived.conf lvsd acts on: `virtual_server` (with its
/// groups, DPVS's `local_address_group`, and the `lvs_timeouts` of
/// `global_defs`). Health-check blocks and `vrrp_instance` blocks are parsed
/// and kept for the health-check and VRRP work.
public struct KeepalivedConfiguration: Sendable {
    public struct RealServer: Sendable, Hashable {
        public var server: RealServerConfiguration
        public var inhibitOnFailure: Bool
        /// TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, …, kept as parsed.
        public var checks: [ConfigBlock]
        public var line: Int
    }

    public struct VirtualServer: Sendable, Hashable {
        /// One service, or several for `virtual_server group`.
        public var services: [ServiceSpec]
        public var realServers: [RealServer]
        public var sorryServer: RealServerConfiguration?
        public var localAddresses: [IPAddress]
        public var quorum: Int
        public var hysteresis: Int
        public var alpha: Bool
        public var omega: Bool
        public var delayLoop: Int
        public var block: ConfigBlock
    }

    public var virtualServers: [VirtualServer] = []
    public var vrrpInstances: [ConfigBlock] = []
    /// `track_file NAME { file PATH; weight W [reverse] }` blocks, by name (FILE_CHECK's files).
    public var trackFiles: [String: ConfigBlock] = [:]
    public var globalDefinitions: ConfigBlock?
    public var timeouts: Timeouts?

    /// The table operations, each with the line it comes from.
    public var operations: [(line: Int, operations: [TableOperation])] {
        var out: [(Int, [TableOperation])] = []
        if let t = timeouts { out.append((0, [.setTimeouts(tcp: t.tcp, tcpFin: t.tcpFin, udp: t.udp)])) }
        for vs in virtualServers {
            for spec in vs.services {
                var ops: [TableOperation] = [.addService(spec)]
                for rs in vs.realServers {
                    var server = rs.server
                    if case .address = spec.key, server.method == .directRouting || server.method == .tunnel { server.port = spec.key.port }
                    ops.append(.addServer(spec.key, server))
                }
                for lip in vs.localAddresses { ops.append(.addLocalAddress(spec.key, lip)) }
                out.append((vs.block.line, ops))
            }
        }
        return out
    }

    // MARK: parsing

    static let schedulers: Set<String> = Set(SchedulerInstance.names)

    public static func parse(_ text: String, file: String) throws(ConfigurationError) -> KeepalivedConfiguration {
        let blocks = try tokenizeAndNest(text, file: file)
        var config = KeepalivedConfiguration()
        var groups: [String: ConfigBlock] = [:]
        var localGroups: [String: ConfigBlock] = [:]
        for b in blocks {
            switch b.keyword {
            case "virtual_server_group": groups[b.arguments.first ?? ""] = b
            case "local_address_group": localGroups[b.arguments.first ?? ""] = b
            default: break
            }
        }
        for b in blocks {
            switch b.keyword {
            case "virtual_server":
                config.virtualServers.append(try virtualServer(b, file: file, groups: groups, localGroups: localGroups))
            case "vrrp_instance", "vrrp_sync_group", "vrrp_script", "vrrp_track_process":
                config.vrrpInstances.append(b)
            case "track_file", "vrrp_track_file":
                guard let name = b.arguments.first, b.first("file")?.arguments.first != nil else {
                    throw ConfigurationError(file: file, line: b.line, keyword: "track_file", message: "needs a name and a file")
                }
                config.trackFiles[name] = b
            case "global_defs":
                config.globalDefinitions = b
                if let t = b.first("lvs_timeouts") {
                    var timeouts = Timeouts(tcp: 0, tcpFin: 0, udp: 0)
                    var args = t.arguments[...]
                    while let name = args.popFirst() {
                        guard let value = args.popFirst(), let n = UInt32(value) else {
                            throw ConfigurationError(file: file, line: t.line, keyword: "lvs_timeouts", message: "expects tcp|tcpfin|udp SECONDS pairs")
                        }
                        switch name {
                        case "tcp": timeouts.tcp = n
                        case "tcpfin": timeouts.tcpFin = n
                        case "udp": timeouts.udp = n
                        default: throw ConfigurationError(file: file, line: t.line, keyword: "lvs_timeouts", message: "unknown timeout '\(name)'")
                        }
                    }
                    config.timeouts = timeouts
                }
            default:
                // What lvsd does not act on is listed by `KeepalivedAudit`.
                break
            }
        }
        return config
    }

    /// Splits into words (`#` and `!` start comments, quotes group words,
    /// braces are words of their own) and nests the blocks.
    static func tokenizeAndNest(_ text: String, file: String) throws(ConfigurationError) -> [ConfigBlock] {
        var stack: [ConfigBlock] = [ConfigBlock(keyword: "", arguments: [], children: [], line: 0)]
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNo = n + 1
            var words: [String] = []
            var word = ""
            var quoted = false
            for ch in raw {
                if quoted {
                    if ch == "\"" {
                        quoted = false
                        words.append(word)
                        word = ""
                    } else {
                        word.append(ch)
                    }
                    continue
                }
                if ch == "#" || ch == "!" { break }
                if ch == "\"" {
                    quoted = true
                    continue
                }
                if ch == " " || ch == "\t" || ch == "\r" {
                    if !word.isEmpty {
                        words.append(word)
                        word = ""
                    }
                } else if ch == "{" || ch == "}" {
                    if !word.isEmpty {
                        words.append(word)
                        word = ""
                    }
                    words.append(String(ch))
                } else {
                    word.append(ch)
                }
            }
            if quoted { throw ConfigurationError(file: file, line: lineNo, message: "unterminated quoted string") }
            if !word.isEmpty { words.append(word) }
            // A line is a statement; `{` opens the statement's block, `}` closes one.
            var current: ConfigBlock? = nil
            for w in words {
                if w == "{" {
                    guard let c = current else {
                        // `{` alone on its line opens the block of the previous statement.
                        guard let last = stack[stack.count - 1].children.popLast() else {
                            throw ConfigurationError(file: file, line: lineNo, message: "'{' without a keyword")
                        }
                        stack.append(last)
                        continue
                    }
                    stack.append(c)
                    current = nil
                } else if w == "}" {
                    if let c = current {
                        stack[stack.count - 1].children.append(c)
                        current = nil
                    }
                    guard stack.count > 1 else { throw ConfigurationError(file: file, line: lineNo, message: "'}' without a block to close") }
                    let done = stack.removeLast()
                    stack[stack.count - 1].children.append(done)
                } else if current == nil {
                    current = ConfigBlock(keyword: w, arguments: [], children: [], line: lineNo)
                } else {
                    current!.arguments.append(w)
                }
            }
            if let c = current { stack[stack.count - 1].children.append(c) }
        }
        guard stack.count == 1 else {
            throw ConfigurationError(file: file, line: stack[stack.count - 1].line, keyword: stack[stack.count - 1].keyword, message: "block is never closed")
        }
        return stack[0].children
    }

    static func method(_ b: ConfigBlock, file: String) throws(ConfigurationError) -> (ForwardingMethod, TunnelConfiguration) {
        var args = b.arguments[...]
        guard let kind = args.popFirst() else { throw ConfigurationError(file: file, line: b.line, keyword: b.keyword, message: "needs NAT, DR, TUN or FNAT") }
        var tunnel = TunnelConfiguration()
        let m: ForwardingMethod
        switch kind.uppercased() {
        case "NAT": m = .nat
        case "DR": m = .directRouting
        case "TUN": m = .tunnel
        case "FNAT", "FULLNAT": m = .fullNAT
        default: throw ConfigurationError(file: file, line: b.line, keyword: b.keyword, message: "unknown forwarding method '\(kind)'")
        }
        while let a = args.popFirst() {
            switch a {
            case "type":
                switch args.popFirst() {
                case "ipip": tunnel.type = .ipip
                case "gue": tunnel.type = .gue
                case "gre": tunnel.type = .gre
                default: throw ConfigurationError(file: file, line: b.line, keyword: b.keyword, message: "tunnel type is ipip, gue or gre")
                }
            case "port":
                guard let p = args.popFirst().flatMap({ UInt16($0) }), p > 0 else {
                    throw ConfigurationError(file: file, line: b.line, keyword: b.keyword, message: "bad tunnel port")
                }
                tunnel.port = p
            case "nocsum": tunnel.checksum = .none
            case "csum": tunnel.checksum = .checksum
            case "remcsum": tunnel.checksum = .remote
            default: throw ConfigurationError(file: file, line: b.line, keyword: b.keyword, message: "unexpected '\(a)'")
            }
        }
        if tunnel.type == .gue && tunnel.port == 0 {
            throw ConfigurationError(file: file, line: b.line, keyword: b.keyword, message: "a GUE tunnel needs a port")
        }
        return (m, tunnel)
    }

    static func number(_ b: ConfigBlock, file: String, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        guard let text = b.arguments.first, let n = Int(text), range.contains(n) else {
            throw ConfigurationError(file: file, line: b.line, keyword: b.keyword, message: "expects a number in \(range.lowerBound)...\(range.upperBound)")
        }
        return n
    }

    static func address(_ text: String?, _ b: ConfigBlock, file: String) throws(ConfigurationError) -> IPAddress {
        guard let text, let a = IPAddress(text) else {
            throw ConfigurationError(file: file, line: b.line, keyword: b.keyword, message: "bad address '\(text ?? "")'")
        }
        return a
    }

    static func virtualServer(
        _ b: ConfigBlock, file: String, groups: [String: ConfigBlock], localGroups: [String: ConfigBlock]
    ) throws(ConfigurationError) -> VirtualServer {
        var proto: TransportProtocol = .tcp
        if let p = b.first("protocol") {
            switch p.arguments.first?.uppercased() {
            case "TCP": proto = .tcp
            case "UDP": proto = .udp
            case "SCTP": proto = .sctp
            default: throw ConfigurationError(file: file, line: p.line, keyword: "protocol", message: "protocol is TCP, UDP or SCTP")
            }
        }
        // Which services: an address and port, a mark, or a group of them.
        var keys: [ServiceKey] = []
        let args = b.arguments
        if args.first == "fwmark" {
            guard args.count == 2, let m = UInt32(args[1]), m > 0 else {
                throw ConfigurationError(file: file, line: b.line, keyword: "virtual_server", message: "fwmark needs a mark greater than zero")
            }
            keys = [.firewallMark(m, ipv6: false)]
        } else if args.first == "group" {
            guard args.count == 2, let g = groups[args[1]] else {
                throw ConfigurationError(
                    file: file, line: b.line, keyword: "virtual_server", message: "unknown virtual_server_group '\(args.dropFirst().first ?? "")'")
            }
            for member in g.children {
                if member.keyword == "fwmark" {
                    guard let m = member.arguments.first.flatMap({ UInt32($0) }), m > 0 else {
                        throw ConfigurationError(file: file, line: member.line, keyword: "fwmark", message: "needs a mark greater than zero")
                    }
                    keys.append(.firewallMark(m, ipv6: false))
                    continue
                }
                guard let portText = member.arguments.first, let port = UInt16(portText) else {
                    throw ConfigurationError(file: file, line: member.line, keyword: member.keyword, message: "group member needs an address and a port")
                }
                for a in try range(member.keyword, member, file: file) { keys.append(.address(proto, a, port)) }
            }
        } else {
            guard args.count == 2, let port = UInt16(args[1]) else {
                throw ConfigurationError(file: file, line: b.line, keyword: "virtual_server", message: "needs <IP> <PORT>, fwmark <N> or group <NAME>")
            }
            keys = [.address(proto, try address(args[0], b, file: file), port)]
        }

        var scheduler = "wlc"
        var flags: SchedulerFlags = []
        var method: (ForwardingMethod, TunnelConfiguration) = (.nat, TunnelConfiguration())
        var persistence: UInt32? = nil
        var netmask: Int? = nil
        var engine: String? = nil
        var onePacket = false
        var synproxy = false
        var proxyProtocol: ProxyProtocol? = nil
        var vsInhibit = false
        var vs = VirtualServer(
            services: [], realServers: [], sorryServer: nil, localAddresses: [], quorum: 1, hysteresis: 0,
            alpha: false, omega: false, delayLoop: 60, block: b)
        // The method first: real servers inherit it.
        if let k = b.all(["lvs_method", "lb_kind"]).last { method = try Self.method(k, file: file) }
        for c in b.children {
            switch c.keyword {
            case "lvs_sched", "lb_algo":
                guard let s = c.arguments.first, schedulers.contains(s) else {
                    throw ConfigurationError(file: file, line: c.line, keyword: c.keyword, message: "unknown scheduler '\(c.arguments.first ?? "")'")
                }
                scheduler = s
            case "lvs_method", "lb_kind", "protocol", "real_server": break
            case "flag-1": flags.insert(.flag1)
            case "flag-2": flags.insert(.flag2)
            case "flag-3", "mh-sorted": flags.insert(.flag3)
            case "sh-fallback", "mh-fallback": flags.insert(.flag1)
            case "sh-port", "mh-port": flags.insert(.flag2)
            case "ops": onePacket = true
            case "syn_proxy": synproxy = true  // DPVS's keepalived
            case "proxy_protocol":  // DPVS's keepalived
                let name = c.arguments.first ?? ""
                guard name.lowercased() == "disable" || ProxyProtocol(name: name) != nil else {
                    throw ConfigurationError(
                        file: file, line: c.line, keyword: c.keyword, message: "must be disable, v1, v2, v1-insecure or v2-insecure, not '\(name)'")
                }
                proxyProtocol = ProxyProtocol(name: name)
            case "persistence_timeout":
                persistence = c.arguments.isEmpty ? 360 : UInt32(try number(c, file: file, in: 1...(86400 * 31)))
            case "persistence_granularity":
                guard let text = c.arguments.first else { throw ConfigurationError(file: file, line: c.line, keyword: c.keyword, message: "needs a mask") }
                if keys.first?.isIPv6 == true {
                    guard let n = Int(text), (1...128).contains(n) else {
                        throw ConfigurationError(file: file, line: c.line, keyword: c.keyword, message: "bad IPv6 prefix length")
                    }
                    netmask = n
                } else {
                    guard let n = AdminCommandLine.parseNetmask(text) else {
                        throw ConfigurationError(file: file, line: c.line, keyword: c.keyword, message: "bad mask '\(text)'")
                    }
                    netmask = n
                }
            case "persistence_engine":
                guard c.arguments.first == "sip" else {
                    throw ConfigurationError(file: file, line: c.line, keyword: c.keyword, message: "the only persistence engine is sip")
                }
                engine = "sip"
            case "sorry_server":
                let a = try address(c.arguments.first, c, file: file)
                let port = c.arguments.count > 1 ? UInt16(c.arguments[1]) : keys.first?.port
                guard let port else { throw ConfigurationError(file: file, line: c.line, keyword: c.keyword, message: "bad port") }
                vs.sorryServer = RealServerConfiguration(address: a, port: port, method: method.0, tunnel: method.1)
            case "quorum": vs.quorum = try number(c, file: file, in: 0...Int(Int32.max))
            case "hysteresis": vs.hysteresis = try number(c, file: file, in: 0...Int(Int32.max))
            case "alpha": vs.alpha = true
            case "omega": vs.omega = true
            case "inhibit_on_failure": vsInhibit = true
            case "delay_loop": vs.delayLoop = try number(c, file: file, in: 1...Int(Int32.max))
            case "laddr_group_name":
                guard let name = c.arguments.first, let g = localGroups[name] else {
                    throw ConfigurationError(file: file, line: c.line, keyword: c.keyword, message: "unknown local_address_group '\(c.arguments.first ?? "")'")
                }
                for member in g.children { vs.localAddresses.append(contentsOf: try range(member.keyword, member, file: file)) }
            default:
                // Listed, with why, by `KeepalivedAudit`.
                break
            }
        }
        for c in b.children where c.keyword == "real_server" {
            let a = try address(c.arguments.first, c, file: file)
            let port: UInt16
            if c.arguments.count > 1 {
                guard let p = UInt16(c.arguments[1]) else {
                    throw ConfigurationError(file: file, line: c.line, keyword: "real_server", message: "bad port '\(c.arguments[1])'")
                }
                port = p
            } else {
                port = keys.first?.port ?? 0
            }
            var rs = RealServerConfiguration(address: a, port: port, weight: 1, method: method.0, tunnel: method.1)
            var inhibit = vsInhibit
            var checks: [ConfigBlock] = []
            for k in c.children {
                switch k.keyword {
                case "weight": rs.weight = Int32(try number(k, file: file, in: 0...65535))
                case "uthreshold": rs.upperThreshold = UInt32(try number(k, file: file, in: 0...Int(Int32.max)))
                case "lthreshold": rs.lowerThreshold = UInt32(try number(k, file: file, in: 0...Int(Int32.max)))
                case "lvs_method", "lb_kind": (rs.method, rs.tunnel) = try Self.method(k, file: file)
                case "inhibit_on_failure": inhibit = true
                case "TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK", "SMTP_CHECK", "DNS_CHECK", "UDP_CHECK", "PING_CHECK", "BFD_CHECK", "FILE_CHECK":
                    checks.append(k)
                default:
                    // Listed, with why, by `KeepalivedAudit`.
                    break
                }
            }
            if rs.lowerThreshold > rs.upperThreshold {
                throw ConfigurationError(file: file, line: c.line, keyword: "lthreshold", message: "lower threshold above the upper threshold")
            }
            if rs.address.isIPv6 != (keys.first?.isIPv6 ?? false) && rs.method != .tunnel {
                throw ConfigurationError(file: file, line: c.line, keyword: "real_server", message: "a different address family needs TUN")
            }
            vs.realServers.append(RealServer(server: rs, inhibitOnFailure: inhibit, checks: checks, line: c.line))
        }
        if vs.realServers.contains(where: { $0.server.method == .fullNAT }) && vs.localAddresses.isEmpty {
            throw ConfigurationError(file: file, line: b.line, keyword: "virtual_server", message: "FNAT needs local addresses (laddr_group_name)")
        }
        for key in keys {
            if case .address(_, _, 0) = key, persistence == nil {
                throw ConfigurationError(file: file, line: b.line, keyword: "virtual_server", message: "port 0 needs persistence_timeout")
            }
            if onePacket, case .address(let p, _, _) = key, p != .udp {
                throw ConfigurationError(file: file, line: b.line, keyword: "ops", message: "one-packet scheduling is only for UDP")
            }
            vs.services.append(
                ServiceSpec(
                    key: key, scheduler: scheduler, schedulerFlags: flags, persistence: persistence,
                    netmask: netmask, persistenceEngine: engine, onePacket: onePacket, synproxy: synproxy,
                    proxyProtocol: proxyProtocol))
        }
        return vs
    }

    /// `A.B.C.D`, or keepalived's range `A.B.C.D-E` (last byte up to E).
    static func range(_ text: String, _ b: ConfigBlock, file: String) throws(ConfigurationError) -> [IPAddress] {
        if let dash = text.firstIndex(of: "-"), case .v4(let first) = try address(String(text[..<dash]), b, file: file) {
            guard let last = UInt8(text[text.index(after: dash)...]), last >= UInt8(first.value & 0xFF) else {
                throw ConfigurationError(file: file, line: b.line, keyword: b.keyword, message: "bad address range '\(text)'")
            }
            return (first.value...(first.value & ~0xFF | UInt32(last))).map { .v4(IPv4Address($0)) }
        }
        return [try address(text, b, file: file)]
    }
}
