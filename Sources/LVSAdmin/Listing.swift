import LVSConfiguration
import LVSControlProtocol
import LVSCore
import LVSPacket
import LVSSystem

/// ipvsadm 1.31's listings, byte for byte (`list_all`, `print_title`,
/// `print_service_entry`, `print_largenum`, `list_conn`, `list_timeout`),
/// plus DPVS's `--get-laddr`.
public struct Listing {
    public var format: ListFormat
    /// Host and service names for addresses and ports when not numeric;
    /// ipvsadm asks the C library, tests inject their own.
    public var hostName: (IPAddress) -> String?
    public var portName: (UInt16, TransportProtocol) -> String?

    public init(
        format: ListFormat, hostName: @escaping (IPAddress) -> String? = NameResolver.name(of:),
        portName: @escaping (UInt16, TransportProtocol) -> String? = { NameResolver.name(ofPort: $0, protocolName: $1.name) }
    ) {
        self.format = format
        self.hostName = hostName
        self.portName = portName
    }

    // MARK: printf

    static func left(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
    static func right(_ s: String, _ width: Int) -> String { s.count >= width ? s : String(repeating: " ", count: width - s.count) + s }

    /// `print_largenum`: `%9llu`, or the value scaled to K, M, G or T in
    /// `%8llu` plus the unit; `--exact` widens instead.
    public static func largeNumber(_ i: UInt64, exact: Bool) -> String {
        if exact {
            let s = String(i)
            return right(s, s.count <= 8 ? 9 : s.count + 1)
        }
        if i < 100_000_000 { return right(String(i), 9) }
        if i < 1_000_000_000 { return right(String(i / 1000), 8) + "K" }
        if i < 100_000_000_000 { return right(String(i / 1_000_000), 8) + "M" }
        if i < 100_000_000_000_000 { return right(String(i / 1_000_000_000), 8) + "G" }
        return right(String(i / 1_000_000_000_000), 8) + "T"
    }

    // MARK: names

    /// `addrport_to_anyname`.
    func addressPort(_ a: IPAddress, _ port: UInt16, _ proto: TransportProtocol?) -> String {
        let host = format.contains(.numeric) ? a.description : (hostName(a) ?? a.description)
        let p = format.contains(.numeric) ? String(port) : (proto.flatMap { portName(port, $0) } ?? String(port))
        return a.isIPv6 ? "[\(host)]:\(p)" : "\(host):\(p)"
    }

    static func protocolName(_ key: ServiceKey) -> TransportProtocol {
        if case .address(let p, _, _) = key { return p }
        return .tcp
    }

    /// `print_sched_flags`.
    static func schedulerFlags(_ s: ServiceSpec) -> String {
        let f = s.schedulerFlags
        var names: [String] = []
        if s.scheduler == "sh" || s.scheduler == "mh" {
            if f.contains(.flag1) { names.append("\(s.scheduler)-fallback") }
            if f.contains(.flag2) { names.append("\(s.scheduler)-port") }
        } else {
            if f.contains(.flag1) { names.append("flag-1") }
            if f.contains(.flag2) { names.append("flag-2") }
        }
        if f.contains(.flag3) { names.append(s.scheduler == "mh" ? "mh-sorted" : "flag-3") }
        return names.joined(separator: ",")
    }

    static func dottedMask(_ prefix: Int) -> String {
        IPv4Address(prefix == 0 ? 0 : UInt32.max << UInt32(32 - prefix)).description
    }

    static func forwardSwitch(_ m: ForwardingMethod) -> String {
        switch m {
        case .nat: "-m"
        case .tunnel: "-i"
        case .local, .directRouting: "-g"
        case .fullNAT: "-b"
        }
    }

    // MARK: ordering (ipvs_cmp_services / ipvs_cmp_dests)

    /// The kernel-order comparison ipvsadm sorts with, including its
    /// wrap-around: addresses compare by the sign of their 32-bit difference.
    static func difference(_ a: IPAddress, _ b: IPAddress) -> Int {
        switch (a, b) {
        case (.v4(let x), .v4(let y)): return Int(Int32(bitPattern: x.value &- y.value))
        case (.v6(let x), .v6(let y)):
            let xs = [
                UInt32(truncatingIfNeeded: x.high >> 32), UInt32(truncatingIfNeeded: x.high), UInt32(truncatingIfNeeded: x.low >> 32),
                UInt32(truncatingIfNeeded: x.low),
            ]
            let ys = [
                UInt32(truncatingIfNeeded: y.high >> 32), UInt32(truncatingIfNeeded: y.high), UInt32(truncatingIfNeeded: y.low >> 32),
                UInt32(truncatingIfNeeded: y.low),
            ]
            for (p, q) in zip(xs, ys) where p != q { return Int(Int32(bitPattern: p &- q)) }
            return 0
        default: return a.isIPv6 ? 8 : -8
        }
    }

    static func precedes(_ s1: ServiceSpec, _ s2: ServiceSpec) -> Bool {
        func parts(_ k: ServiceKey) -> (UInt32, Int, Int, IPAddress, Int) {
            switch k {
            case .address(let p, let a, let port): (0, a.isIPv6 ? 10 : 2, Int(p.rawValue), a, Int(port))
            case .firewallMark(let m, let v6): (m, v6 ? 10 : 2, 6, .v4(.zero), 0)
            }
        }
        let a = parts(s1.key)
        let b = parts(s2.key)
        var r = Int(Int32(bitPattern: a.0 &- b.0))
        if r == 0 { r = a.1 - b.1 }
        if r == 0 { r = a.2 - b.2 }
        if r == 0 { r = difference(a.3, b.3) }
        if r == 0 { r = a.4 - b.4 }
        return r < 0
    }

    static func precedes(_ d1: RealServerConfiguration, _ d2: RealServerConfiguration) -> Bool {
        var r = (d1.address.isIPv6 ? 10 : 2) - (d2.address.isIPv6 ? 10 : 2)
        if r == 0 { r = difference(d1.address, d2.address) }
        if r == 0 { r = Int(d1.port) - Int(d2.port) }
        return r < 0
    }

    func ordered(_ services: [ServiceSnapshot]) -> [ServiceSnapshot] {
        format.contains(.noSort) ? services : services.sorted { Self.precedes($0.service, $1.service) }
    }

    func ordered(_ servers: [ServerSnapshot]) -> [ServerSnapshot] {
        // Unsorted, ipvsadm shows the kernel's list: newest first.
        format.contains(.noSort) ? servers.reversed() : servers.sorted { Self.precedes($0.server, $1.server) }
    }

    // MARK: listings

    /// `list_all`: the header (not for -S), the title and every service.
    public func all(_ snapshot: TableSnapshot) -> String {
        var out = ""
        if !format.contains(.rule) {
            out += "IP Virtual Server version \(snapshot.version) (size=\(snapshot.connectionTableSize))\n"
        }
        out += title()
        for s in ordered(snapshot.services) { out += entry(s) }
        return out
    }

    /// `list_service`: the title and one service.
    public func one(_ service: ServiceSnapshot) -> String { title() + entry(service) }

    /// `print_title`.
    public func title() -> String {
        if format.contains(.stats) {
            return Self.left("Prot LocalAddress:Port", 33) + " "
                + ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"].map { Self.right($0, 8) }.joined(separator: " ")
                + "\n  -> RemoteAddress:Port\n"
        }
        if format.contains(.rate) {
            return Self.left("Prot LocalAddress:Port", 33) + " "
                + ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"].map { Self.right($0, 8) }.joined(separator: " ")
                + "\n  -> RemoteAddress:Port\n"
        }
        if format.contains(.thresholds) {
            return Self.left("Prot LocalAddress:Port", 33) + " "
                + ["Uthreshold", "Lthreshold", "ActiveConn", "InActConn"].map { Self.left($0, 10) }.joined(separator: " ")
                + "\n  -> RemoteAddress:Port\n"
        }
        if format.contains(.persistentConnections) {
            return Self.left("Prot LocalAddress:Port", 33) + " " + Self.left("Weight", 9) + " " + Self.left("PersistConn", 11) + " "
                + Self.left("ActiveConn", 10) + " " + Self.left("InActConn", 10) + "\n  -> RemoteAddress:Port\n"
        }
        if format.contains(.tunnelInfo) {
            return "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
        }
        if format.contains(.rule) { return "" }
        return "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    }

    func serviceName(_ spec: ServiceSpec) -> String {
        switch spec.key {
        case .firewallMark(let m, let v6):
            if format.contains(.rule) { return v6 ? "-f \(m) -6" : "-f \(m)" }
            return v6 ? "FWM  \(m) IPv6" : "FWM  \(m)"
        case .address(let p, let a, let port):
            let name = addressPort(a, port, p)
            if format.contains(.rule) { return (p == .tcp ? "-t" : p == .udp ? "-u" : "--sctp-service") + " " + name }
            let line = (p == .tcp ? "TCP" : p == .udp ? "UDP" : "SCTP") + "  " + name
            return a.isIPv6 ? line : String(line.prefix(33))
        }
    }

    /// `print_service_entry`.
    public func entry(_ s: ServiceSnapshot) -> String {
        let spec = s.service
        let name = serviceName(spec)
        let proto = Self.protocolName(spec.key)
        let exact = format.contains(.exact)
        var out = ""
        if format.contains(.rule) {
            out += "-A \(name) -s \(spec.scheduler)"
            if let p = spec.persistence {
                out += " -p \(p)"
                if !spec.key.isIPv6 && spec.netmask != 32 { out += " -M \(Self.dottedMask(spec.netmask))" }
                if spec.key.isIPv6 && spec.netmask != 128 { out += " -M \(spec.netmask)" }
            }
            if let pe = spec.persistenceEngine { out += " --pe \(pe)" }
            if spec.onePacket { out += " -o" }
            if spec.synproxy { out += " -j enable" }
            if let pp = spec.proxyProtocol { out += " --proxy-protocol \(pp.name)" }
            if !spec.schedulerFlags.isEmpty { out += " -b \(Self.schedulerFlags(spec))" }
        } else if format.contains(.stats) {
            out += Self.left(name, 33)
            for v in [s.stats.connections, s.stats.inPackets, s.stats.outPackets, s.stats.inBytes, s.stats.outBytes] {
                out += Self.largeNumber(v, exact: exact)
            }
        } else if format.contains(.rate) {
            out += Self.left(name, 33)
            let r = s.rates
            for v in [r.connectionsPerSecond, r.inPacketsPerSecond, r.outPacketsPerSecond, r.inBytesPerSecond, r.outBytesPerSecond] {
                out += Self.largeNumber(v, exact: exact)
            }
        } else {
            out += "\(name) \(spec.scheduler)"
            if !spec.schedulerFlags.isEmpty { out += " (\(Self.schedulerFlags(spec)))" }
            if let p = spec.persistence {
                out += " persistent \(p)"
                if !spec.key.isIPv6 && spec.netmask != 32 { out += " mask \(Self.dottedMask(spec.netmask))" }
                if spec.key.isIPv6 && spec.netmask != 128 { out += " mask \(spec.netmask)" }
                if let pe = spec.persistenceEngine { out += " pe \(pe)" }
            }
            if spec.onePacket { out += " ops" }
            if spec.synproxy { out += " synproxy" }
            if let pp = spec.proxyProtocol { out += " pp\(pp.name)" }
        }
        out += "\n"
        for d in ordered(s.servers) {
            let e = d.server
            var dname = addressPort(e.address, e.port, proto)
            if !format.contains(.rule) && !e.address.isIPv6 { dname = String(dname.prefix(28)) }
            if format.contains(.rule) {
                out += "-a \(name) -r \(dname) \(Self.forwardSwitch(e.method)) -w \(e.weight)"
                if e.method == .tunnel {
                    switch e.tunnel.type {
                    case .gue:
                        out +=
                            " --tun-type gue --tun-port \(e.tunnel.port) " + ["--tun-nocsum", "--tun-csum", "--tun-remcsum"][Int(e.tunnel.checksum.rawValue)]
                    case .ipip, .gre:
                        out += " --tun-type ipip"
                    }
                }
                // ipvsadm -S drops thresholds; lvsadm keeps them so that -R restores them.
                if e.upperThreshold != 0 { out += " -x \(e.upperThreshold)" }
                if e.lowerThreshold != 0 { out += " -y \(e.lowerThreshold)" }
                out += "\n"
            } else if format.contains(.stats) {
                out += "  -> " + Self.left(dname, 28)
                for v in [d.stats.connections, d.stats.inPackets, d.stats.outPackets, d.stats.inBytes, d.stats.outBytes] {
                    out += Self.largeNumber(v, exact: exact)
                }
                out += "\n"
            } else if format.contains(.rate) {
                let r = d.rates
                out +=
                    "  -> " + Self.left(dname, 28) + " " + Self.right(String(r.connectionsPerSecond), 8) + " "
                    + Self.right(String(r.inPacketsPerSecond), 8) + " " + Self.right(String(r.outPacketsPerSecond), 8)
                out += Self.largeNumber(r.inBytesPerSecond, exact: exact) + Self.largeNumber(r.outBytesPerSecond, exact: exact) + "\n"
            } else if format.contains(.thresholds) {
                out +=
                    "  -> " + Self.left(dname, 28) + " "
                    + [e.upperThreshold, e.lowerThreshold, d.activeConnections, d.inactiveConnections]
                    .map { Self.left(String($0), 10) }.joined(separator: " ") + "\n"
            } else if format.contains(.persistentConnections) {
                out +=
                    "  -> " + Self.left(dname, 28) + " " + Self.left(String(e.weight), 9) + " " + Self.left(String(d.persistentConnections), 11) + " "
                    + Self.left(String(d.activeConnections), 10) + " " + Self.left(String(d.inactiveConnections), 10) + "\n"
            } else if format.contains(.tunnelInfo) {
                out +=
                    "  -> " + Self.left(dname, 28) + " " + Self.left(e.method.label, 7) + " " + Self.left(Self.tunnelInfo(e), 13) + " "
                    + Self.left(String(e.weight), 6) + " " + Self.left(String(d.activeConnections), 10) + " " + Self.left(String(d.inactiveConnections), 10)
                    + "\n"
            } else {
                out +=
                    "  -> " + Self.left(dname, 28) + " " + Self.left(e.method.label, 7) + " " + Self.left(String(e.weight), 6) + " "
                    + Self.left(String(d.activeConnections), 10) + " " + Self.left(String(d.inactiveConnections), 10) + "\n"
            }
        }
        if format.contains(.rule) {
            for lip in s.localAddresses { out += "--add-laddr \(name) -z \(lip)\n" }
        }
        return out
    }

    /// `fwd_tun_info`.
    static func tunnelInfo(_ e: RealServerConfiguration) -> String {
        guard e.method == .tunnel else { return "n/a" }
        switch e.tunnel.type {
        case .ipip: return "ipip"
        case .gue: return "gue:\(e.tunnel.port):" + ["-c", "+c", "r+c"][Int(e.tunnel.checksum.rawValue)]
        case .gre: return "n/a"
        }
    }

    /// `list_conn` over lvsd's connection table.
    public func connections(_ entries: [ConnectionEntry]) -> String {
        var out = "IPVS connection entries\n"
        if format.contains(.persistentConnections) {
            out +=
                "pro expire " + Self.left("state", 11) + " " + Self.left("source", 18) + " " + Self.left("virtual", 18) + " "
                + Self.left("destination", 18) + " " + Self.left("pe name", 16) + " pe_data\n"
        } else {
            out += "pro expire " + Self.left("state", 11) + " " + Self.left("source", 18) + " " + Self.left("virtual", 18) + " destination\n"
        }
        for c in entries {
            let proto: TransportProtocol? = c.proto == "TCP" ? .tcp : c.proto == "UDP" ? .udp : c.proto == "SCTP" ? .sctp : nil
            let expire = (c.expires / 60 < 10 ? "0" : "") + String(c.expires / 60) + ":" + (c.expires % 60 < 10 ? "0" : "") + String(c.expires % 60)
            out +=
                Self.left(c.proto, 3) + " " + Self.left(expire, 6) + " " + Self.left(c.state, 11) + " "
                + Self.left(addressPort(c.client, c.clientPort, proto), 18) + " " + Self.left(addressPort(c.virtual, c.virtualPort, proto), 18)
                + " " + addressPort(c.real, c.realPort, proto) + "\n"
        }
        return out
    }

    /// `list_timeout`.
    public static func timeouts(_ t: Timeouts) -> String { "Timeout (tcp tcpfin udp): \(t.tcp) \(t.tcpFin) \(t.udp)\n" }

    /// `--daemon`, as ipvsadm prints what a current kernel reports (which
    /// always includes maxlen, group, port and ttl).
    public static func daemons(_ daemons: [SyncDaemonConfiguration]) -> String {
        daemons.map { d in
            "\(d.role.rawValue) sync daemon (mcast=\(d.interface), syncid=\(d.syncID), maxlen=\(d.maxLength), group=\(d.group), port=\(d.port), ttl=\(d.ttl))\n"
        }.joined()
    }

    /// lvsadm's `--health`: each checked real server, grouped by service.
    public func health(_ entries: [HealthEntry]) -> String {
        var out = "Prot LocalAddress:Port\n  -> RemoteAddress:Port           Check          State Since   Detail\n"
        var last: ServiceKey? = nil
        for e in entries.sorted(by: { ($0.service.description, $0.address, $0.port) < ($1.service.description, $1.address, $1.port) }) {
            if e.service != last {
                out += serviceName(ServiceSpec(key: e.service)) + "\n"
                last = e.service
            }
            let proto = Self.protocolName(e.service)
            out +=
                "  -> " + Self.left(addressPort(e.address, e.port, proto), 28) + " " + Self.left(e.checks.joined(separator: ","), 14)
                + " " + Self.left(e.up ? "up" : "down", 5) + " " + Self.left("\(e.since)s", 7) + " " + e.detail
            while out.hasSuffix(" ") { out.removeLast() }
            out += "\n"
        }
        return out
    }

    /// lvsadm's `--drops`: every reason that dropped a frame, in the core's order.
    public static func drops(_ drops: [String: UInt64]) -> String {
        var out = left("Drop reason", 32) + " Frames\n"
        for reason in DropReason.all.map(\.description) {
            if let n = drops[reason], n > 0 { out += left(reason, 32) + " " + String(n) + "\n" }
        }
        return out
    }

    /// DPVS's `--get-laddr`.
    public func localAddresses(_ services: [ServiceSnapshot], connections: [ConnectionEntry]) -> String {
        var out = Self.left("VIP:VPORT", 20) + " " + Self.left("TOTAL", 8) + " " + Self.left("SNAT_IP", 20) + " " + Self.left("CONFLICTS", 10) + " CONNS\n"
        for s in ordered(services) where !s.localAddresses.isEmpty {
            guard case .address(let p, let vip, let vport) = s.service.key else { continue }
            for (i, lip) in s.localAddresses.enumerated() {
                let conns = connections.filter { $0.local == lip && $0.virtual == vip && $0.virtualPort == vport }.count
                let head =
                    i == 0
                    ? Self.left(addressPort(vip, vport, p), 20) + " " + Self.left(String(s.localAddresses.count), 8)
                    : Self.left("", 20) + " " + Self.left("", 8)
                out += head + " " + Self.left(lip.description, 20) + " " + Self.left("0", 10) + " " + String(conns) + "\n"
            }
        }
        return out
    }
}
