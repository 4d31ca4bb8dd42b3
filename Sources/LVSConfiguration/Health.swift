import LVSCore
import LVSPacket
import LVSSystem

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// One checker of a real server, from a keepalived.conf `real_server` block.
public struct HealthCheck: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case tcp
        /// HTTP_GET, or SSL_GET with `tls`: each path must answer with one
        /// of its status codes, and with its digest when it has one.
        case http([URLCheck], tls: Bool)
        /// MISC_CHECK: exit 0 up, 1 down, 2–255 up with weight rc − 2 when dynamic.
        case misc(command: String, timeout: Double, dynamic: Bool)
        /// SMTP_CHECK: the server's 220 greeting, 250 to `HELO helo`, then
        /// QUIT; with `host` blocks, at each of them (all must pass).
        case smtp(helo: String, hosts: [Endpoint])
        /// DNS_CHECK: a query of `type` for `name` over UDP, answered with its
        /// id and RCODE 0 (NOERROR).
        case dns(type: UInt16, name: String)
        /// UDP_CHECK: `payload` sent; up unless an ICMP error comes back, or,
        /// with `reply`, unless no matching reply comes within the timeout.
        case udp(payload: [UInt8], reply: UDPReply?)
        /// PING_CHECK: an ICMP (ICMPv6) echo request answered within the timeout.
        case ping
        /// FILE_CHECK: the number in `path` (0 when missing or unreadable).
        /// With `weight` 0, any value but 0 is down; otherwise the value
        /// times `weight` (negated with `reverse`) is added to the server's
        /// weight (0 at least, 65535 at most).
        case file(path: String, weight: Int, reverse: Bool)

        public var name: String {
            switch self {
            case .tcp: "TCP_CHECK"
            case .http(_, let tls): tls ? "SSL_GET" : "HTTP_GET"
            case .misc: "MISC_CHECK"
            case .smtp: "SMTP_CHECK"
            case .dns: "DNS_CHECK"
            case .udp: "UDP_CHECK"
            case .ping: "PING_CHECK"
            case .file: "FILE_CHECK"
            }
        }
    }

    /// Where a check connects instead of the real server (SMTP_CHECK's `host`
    /// blocks): nil fields are the checker's.
    public struct Endpoint: Sendable, Hashable {
        public var address: IPAddress?
        public var port: UInt16?
        public init(address: IPAddress? = nil, port: UInt16? = nil) {
            self.address = address
            self.port = port
        }
    }

    /// UDP_CHECK's `require_reply`: a reply of `minimum` to `maximum` bytes
    /// whose first bytes are `data` where `mask` is 0 (an `x` nibble of the
    /// hex text matches anything).
    public struct UDPReply: Sendable, Hashable {
        public var data: [UInt8] = []
        public var mask: [UInt8] = []
        public var minimum = 0
        public var maximum = 255

        public func accepts(_ reply: [UInt8]) -> Bool {
            guard (minimum...max(minimum, maximum)).contains(reply.count) else { return false }
            for i in 0..<min(reply.count, data.count) where (reply[i] ^ data[i]) & ~mask[i] != 0 { return false }
            return true
        }
    }

    /// DNS_CHECK's `type` names, as keepalived knows them.
    public static let dnsTypes: [String: UInt16] = ["A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28]

    /// One `url` block of HTTP_GET or SSL_GET.
    public struct URLCheck: Sendable, Hashable {
        public var path: String
        /// `status_code 200 301-303 …`; keepalived's default is any 2xx.
        public var statuses: [ClosedRange<Int>]
        /// The body's MD5 in hex (`genhash` prints it), when given.
        public var digest: String?
        /// `virtualhost`: the Host header (and, with `enable_sni`, the TLS
        /// server name); nil: the address.
        public var virtualhost: String?
        public init(path: String, statuses: [ClosedRange<Int>] = [200...299], digest: String? = nil, virtualhost: String? = nil) {
            self.path = path
            self.statuses = statuses
            self.digest = digest?.lowercased()
            self.virtualhost = virtualhost
        }

        public func accepts(_ status: Int) -> Bool { statuses.contains { $0.contains(status) } }
    }

    public var kind: Kind
    public var connectAddress: IPAddress?
    public var connectPort: UInt16?
    public var connectTimeout: Double = 5
    /// keepalived's `retry`: further tries, `delayBeforeRetry` apart, before
    /// a server that is up is declared down (a server already down gets one).
    public var retry = 1
    public var delayBeforeRetry: Double = 1
    /// Seconds between checks (the virtual server's `delay_loop`).
    public var delayLoop: Double = 60
    /// Seconds within which the first check starts (a random moment).
    public var warmup: Double = 0
    /// SSL_GET's `enable_sni`: the virtual host goes in the TLS handshake.
    public var sni = false
    /// The service's PROXY protocol: a real server that expects the header
    /// gets one, from an unknown source (`PROXY UNKNOWN`, version 2's LOCAL),
    /// before the check's request, as DPVS's keepalived sends it.
    public var proxyProtocol: ProxyProtocol.Version?

    /// What goes before a request.
    public var proxyPreamble: [UInt8] {
        switch proxyProtocol {
        case .v1: Array("PROXY UNKNOWN\r\n".utf8)
        case .v2: ProxyHeader.signature + [0x20, 0x00, 0x00, 0x00]
        case nil: []
        }
    }
}

/// A real server under health checks, in every service it belongs to.
public struct HealthTarget: Sendable, Hashable {
    public var services: [ServiceKey]
    public var server: RealServerConfiguration
    public var inhibitOnFailure: Bool
    /// keepalived's `alpha`: start down until a check succeeds.
    public var startsDown: Bool
    public var checks: [HealthCheck]
    /// Commands run when the server goes up or down.
    public var notifyUp: String? = nil
    public var notifyDown: String? = nil
    /// keepalived's `omega`: `notify_down` runs at shutdown for a server that is up.
    public var omega = false

    public var name: String {
        server.address.isIPv6 ? "[\(server.address)]:\(server.port)" : "\(server.address):\(server.port)"
    }

    /// One record per server per virtual server block.
    public var id: String { services.map(\.description).joined(separator: ",") + " " + name }
}

/// A virtual server's quorum: while the weights of its live real servers sum
/// below `quorum`, its sorry server serves; it leaves again once they reach
/// `quorum + hysteresis`.
public struct QuorumGroup: Sendable, Hashable {
    public var services: [ServiceKey]
    public var quorum: Int
    public var hysteresis: Int
    public var sorryServer: RealServerConfiguration?
    /// `quorum_up` / `quorum_down`: run when the quorum is regained or lost
    /// (and `quorum_down` at shutdown with `omega`).
    public var up: String? = nil
    public var down: String? = nil
    public var omega = false
}

extension KeepalivedConfiguration {
    /// The servers that have checkers, with the checks as lvsd runs them.
    public func healthTargets(file: String) throws(ConfigurationError) -> [HealthTarget] {
        var out: [HealthTarget] = []
        for vs in virtualServers {
            for rs in vs.realServers where !rs.checks.isEmpty {
                var server = rs.server
                if let key = vs.services.first?.key, case .address = key, server.method == .directRouting || server.method == .tunnel { server.port = key.port }
                var checks: [HealthCheck] = []
                for block in rs.checks {
                    if var c = try HealthCheck(
                        block, delayLoop: Double(vs.delayLoop), virtualhost: vs.block.first("virtualhost")?.arguments.first, trackFiles: trackFiles,
                        file: file)
                    {
                        c.proxyProtocol = vs.services.first?.proxyProtocol?.version
                        checks.append(c)
                    }
                }
                guard !checks.isEmpty else { continue }
                let block = vs.block.children.first { $0.keyword == "real_server" && $0.line == rs.line }
                func command(_ keyword: String) -> String? {
                    block?.first(keyword).map { $0.arguments.joined(separator: " ") }.flatMap { $0.isEmpty ? nil : $0 }
                }
                out.append(
                    HealthTarget(
                        services: vs.services.map(\.key), server: server, inhibitOnFailure: rs.inhibitOnFailure,
                        startsDown: vs.alpha, checks: checks, notifyUp: command("notify_up"), notifyDown: command("notify_down"),
                        omega: vs.omega))
            }
        }
        return out
    }
}

extension KeepalivedConfiguration {
    /// Every virtual server's quorum and sorry server.
    public var quorumGroups: [QuorumGroup] {
        virtualServers.map { vs in
            func command(_ keyword: String) -> String? { vs.block.first(keyword).map { $0.arguments.joined(separator: " ") }.flatMap { $0.isEmpty ? nil : $0 } }
            return QuorumGroup(
                services: vs.services.map(\.key), quorum: vs.quorum, hysteresis: vs.hysteresis, sorryServer: vs.sorryServer,
                up: command("quorum_up"), down: command("quorum_down"), omega: vs.omega)
        }
    }
}

extension HealthCheck {
    /// nil for checkers lvsd does not run (BFD_CHECK).
    /// `virtualhost`: the virtual server's, which the checker's and each url's override.
    init?(
        _ b: ConfigBlock, delayLoop: Double, virtualhost: String? = nil, trackFiles: [String: ConfigBlock] = [:], file: String
    ) throws(ConfigurationError) {
        func number(_ c: ConfigBlock) throws(ConfigurationError) -> Double {
            guard let t = c.arguments.first, let v = Double(t), v >= 0 else {
                throw ConfigurationError(file: file, line: c.line, keyword: c.keyword, message: "needs a number")
            }
            return v
        }
        switch b.keyword {
        case "TCP_CHECK": kind = .tcp
        case "HTTP_GET", "SSL_GET":
            var urls: [URLCheck] = []
            for u in b.children where u.keyword == "url" {
                var statuses: [ClosedRange<Int>] = []
                for text in u.first("status_code")?.arguments ?? [] {
                    let ends = text.split(separator: "-").compactMap { Int($0) }
                    guard (1...2).contains(ends.count), ends.allSatisfy({ (100...999).contains($0) }), ends[0] <= ends[ends.count - 1] else {
                        throw ConfigurationError(file: file, line: u.line, keyword: "status_code", message: "'\(text)' is not a status code or range")
                    }
                    statuses.append(ends[0]...ends[ends.count - 1])
                }
                let digest = u.first("digest")?.arguments.first
                if let d = digest, d.count != 32 || !d.allSatisfy(\.isHexDigit) {
                    throw ConfigurationError(file: file, line: u.line, keyword: "digest", message: "expects the 32 hex digits of an MD5 (genhash)")
                }
                let host = u.first("virtualhost")?.arguments.first ?? b.first("virtualhost")?.arguments.first ?? virtualhost
                urls.append(
                    URLCheck(
                        path: u.first("path")?.arguments.first ?? "/", statuses: statuses.isEmpty ? [200...299] : statuses, digest: digest,
                        virtualhost: host))
            }
            let host = b.first("virtualhost")?.arguments.first ?? virtualhost
            kind = .http(urls.isEmpty ? [URLCheck(path: "/", virtualhost: host)] : urls, tls: b.keyword == "SSL_GET")
            sni = b.keyword == "SSL_GET" && b.first("enable_sni") != nil
        case "MISC_CHECK":
            guard let command = b.first("misc_path")?.arguments.joined(separator: " "), !command.isEmpty else {
                throw ConfigurationError(file: file, line: b.line, keyword: "MISC_CHECK", message: "needs misc_path")
            }
            let timeout = try b.first("misc_timeout").map { (c) throws(ConfigurationError) in try number(c) } ?? delayLoop
            kind = .misc(command: command, timeout: timeout, dynamic: b.first("misc_dynamic") != nil)
        case "SMTP_CHECK":
            var hosts: [Endpoint] = []
            for h in b.children where h.keyword == "host" {
                var e = Endpoint()
                for c in h.children {
                    switch c.keyword {
                    case "connect_ip", "connect_address":
                        guard let a = c.arguments.first.flatMap({ IPAddress($0) }) else {
                            throw ConfigurationError(file: file, line: c.line, keyword: c.keyword, message: "needs an address")
                        }
                        e.address = a
                    case "connect_port":
                        guard let p = c.arguments.first.flatMap({ UInt16($0) }) else {
                            throw ConfigurationError(file: file, line: c.line, keyword: c.keyword, message: "needs a port")
                        }
                        e.port = p
                    default: break
                    }
                }
                hosts.append(e)
            }
            kind = .smtp(helo: b.first("helo_name")?.arguments.first ?? "smtpchecker.keepalived.org", hosts: hosts)
        case "DNS_CHECK":
            var type: UInt16 = 6
            if let t = b.first("type") {
                guard let name = t.arguments.first, let v = Self.dnsTypes[name.uppercased()] else {
                    throw ConfigurationError(
                        file: file, line: t.line, keyword: "type", message: "one of \(Self.dnsTypes.keys.sorted().joined(separator: ", "))")
                }
                type = v
            }
            let name = b.first("name")?.arguments.first ?? "."
            guard Self.dnsName(name) != nil else {
                throw ConfigurationError(file: file, line: b.first("name")?.line ?? b.line, keyword: "name", message: "'\(name)' is not a domain name")
            }
            kind = .dns(type: type, name: name)
            retry = 3
        case "UDP_CHECK":
            var payload: [UInt8] = []
            if let p = b.first("payload") {
                guard let (bytes, mask) = Self.hex(p.arguments.joined()), !bytes.isEmpty, mask.allSatisfy({ $0 == 0 }) else {
                    throw ConfigurationError(file: file, line: p.line, keyword: "payload", message: "expects hex digits")
                }
                payload = bytes
            }
            var reply: UDPReply? = nil
            if let r = b.first("require_reply") {
                var want = UDPReply()
                if !r.arguments.isEmpty {
                    guard let (bytes, mask) = Self.hex(r.arguments.joined()) else {
                        throw ConfigurationError(file: file, line: r.line, keyword: "require_reply", message: "expects hex digits (x: any)")
                    }
                    (want.data, want.mask) = (bytes, mask)
                }
                for (keyword, limit) in [("min_reply_length", \UDPReply.minimum), ("max_reply_length", \UDPReply.maximum)] {
                    guard let m = b.first(keyword) else { continue }
                    let n = try number(m)
                    guard n >= 0, n <= 65535 else { throw ConfigurationError(file: file, line: m.line, keyword: keyword, message: "expects 0 to 65535") }
                    want[keyPath: limit] = Int(n)
                }
                reply = want
            }
            kind = .udp(payload: payload, reply: reply)
        case "PING_CHECK": kind = .ping
        case "FILE_CHECK":
            guard let name = b.first("track_file")?.arguments.first, let tracked = trackFiles[name], let path = tracked.first("file")?.arguments.first
            else {
                throw ConfigurationError(file: file, line: b.line, keyword: "FILE_CHECK", message: "needs the track_file of a track_file block")
            }
            // The checker's weight, else the track_file's.
            let w = b.first("weight") ?? tracked.first("weight")
            var weight = 0
            if let w {
                guard let v = w.arguments.first.flatMap({ Int($0) }), (-254...254).contains(v),
                    w.arguments.count < 2 || ["reverse", "noreverse"].contains(w.arguments[1])
                else {
                    throw ConfigurationError(file: file, line: w.line, keyword: "weight", message: "expects -254 to 254, then reverse or noreverse")
                }
                weight = v
            }
            kind = .file(path: path, weight: weight, reverse: w?.arguments.dropFirst().first == "reverse")
            retry = 0
        default:
            return nil
        }
        self.delayLoop = max(1, delayLoop)
        for c in b.children {
            switch c.keyword {
            case "connect_ip", "connect_address":
                guard let a = c.arguments.first.flatMap({ IPAddress($0) }) else {
                    throw ConfigurationError(file: file, line: c.line, keyword: c.keyword, message: "needs an address")
                }
                connectAddress = a
            case "connect_port":
                guard let p = c.arguments.first.flatMap({ UInt16($0) }) else {
                    throw ConfigurationError(file: file, line: c.line, keyword: c.keyword, message: "needs a port")
                }
                connectPort = p
            case "connect_timeout": connectTimeout = max(0.1, try number(c))
            case "retry", "nb_get_retry": retry = Int(try number(c))
            case "delay_before_retry": delayBeforeRetry = try number(c)
            case "warmup": warmup = try number(c)
            default: break
            }
        }
    }
}

extension HealthCheck {
    /// keepalived's hex strings: digit pairs, spaces ignored; in a reply an
    /// `x` nibble matches anything (its mask bits set).
    static func hex(_ text: String) -> (bytes: [UInt8], mask: [UInt8])? {
        let digits = Array(text.lowercased().filter { $0 != " " })
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        var mask: [UInt8] = []
        for i in stride(from: 0, to: digits.count, by: 2) {
            var b: UInt8 = 0
            var m: UInt8 = 0
            for c in digits[i...(i + 1)] {
                b <<= 4
                m <<= 4
                if c == "x" {
                    m |= 0xF
                } else {
                    guard let v = c.hexDigitValue else { return nil }
                    b |= UInt8(v)
                }
            }
            bytes.append(b)
            mask.append(m)
        }
        return (bytes, mask)
    }

    /// A domain name in DNS wire form (labels of 1 to 63 bytes, "." the root).
    public static func dnsName(_ name: String) -> [UInt8]? {
        var out: [UInt8] = []
        for label in name.split(separator: ".", omittingEmptySubsequences: false) where !label.isEmpty {
            let bytes = Array(label.utf8)
            guard bytes.count <= 63 else { return nil }
            out.append(UInt8(bytes.count))
            out += bytes
        }
        out.append(0)
        return out.count <= 255 && !name.contains("..") ? out : nil
    }
}

extension ConfigurationSources {
    /// The health checkers and quorum groups of the keepalived.conf files.
    public func loadHealth() throws(ConfigurationError) -> (targets: [HealthTarget], quorum: [QuorumGroup]) {
        var targets: [HealthTarget] = []
        var groups: [QuorumGroup] = []
        for file in keepalived {
            let config = try KeepalivedConfiguration.parse(try Self.read(file), file: file)
            targets += try config.healthTargets(file: file)
            groups += config.quorumGroups
        }
        return (targets, groups)
    }
}
