import LVSCore
import LVSPacket

/// A line of the firewall-mark classifier as read, its interface still a
/// name (resolved to an index where lvsd serves, `MarkRules.resolved`).
public struct MarkRuleLine: Sendable, Hashable {
    public var rule: FirewallMarkRule
    /// nil: any interface; a trailing `*` matches a prefix, as nft's.
    public var interfaceName: String?
}

/// A marking rule lvsd cannot follow, where it is and why: the frames it
/// marks reach their firewall-mark service only through rules lvsd follows.
public struct MarkRuleNotice: Sendable, Hashable, CustomStringConvertible {
    /// `table inet lvs chain pre` for the ruleset, `file:line` for a marks file.
    public var location: String
    public var rule: String
    public var reason: String
    public var description: String { "\(location): `\(rule)`: \(reason)" }
}

/// What lvsd classifies by: the lines, in the order netfilter runs them,
/// and the rules it could not compile.
public struct MarkRules: Sendable, Hashable {
    public var lines: [MarkRuleLine] = []
    public var notices: [MarkRuleNotice] = []
    public init() {}

    /// `other`'s lines after these, as later chains (their chain and rule
    /// numbers moved past these ones).
    public mutating func append(_ other: MarkRules) {
        let chains = (lines.map(\.rule.chain).max() ?? -1) + 1
        let rules = (lines.map(\.rule.rule).max() ?? -1) + 1
        for var line in other.lines {
            line.rule.chain += chains
            line.rule.rule += rules
            lines.append(line)
        }
        notices += other.notices
    }

    /// Every mark some line sets.
    public var marks: Set<UInt32> { Set(lines.compactMap(\.rule.mark)) }

    /// The classifier's lines with interface indices: a line naming an
    /// interface that does not exist matches nothing and goes.
    public func resolved(interfaceIndex: (String) -> [UInt16]) -> [FirewallMarkRule] {
        lines.flatMap { line -> [FirewallMarkRule] in
            guard let name = line.interfaceName else { return [line.rule] }
            return interfaceIndex(name).map {
                var r = line.rule
                r.interface = $0
                return r
            }
        }
    }

    /// The rules of `nft list ruleset` that mark in prerouting: the base
    /// chains on the prerouting hook of the ip, ip6 and inet tables, by
    /// priority. iptables-nft rules are there too, translated by nft.
    public static func nftables(_ text: String) -> MarkRules {
        var parser = MarkRuleParser(text)
        var out = MarkRules()
        var chains = parser.ruleset()
        chains.sort { $0.priority < $1.priority }
        var n: Int32 = 0
        for (k, c) in chains.enumerated() {
            for rule in c.rules {
                out.compile(rule, sets: c.sets, ipv6: c.ipv6, chain: Int32(k), rule: n, location: "table \(c.family) \(c.table) chain \(c.name)")
                n += 1
            }
        }
        return out
    }

    /// lvsd's marks file, for a director without netfilter rules: one nft
    /// rule per line (`ip daddr 198.18.1.10 tcp dport { 80, 443 } meta mark
    /// set 1`), `#` comments, run in order as one prerouting chain. Any
    /// rule it cannot follow is an error.
    public static func file(_ text: String, file: String) throws(ConfigurationError) -> MarkRules {
        var parser = MarkRuleParser(text)
        var out = MarkRules()
        for (n, rule) in parser.lines().enumerated() {
            out.compile(rule, sets: [:], ipv6: nil, chain: 0, rule: Int32(n), location: "\(file):\(rule.first?.line ?? 0)")
            if let e = out.notices.first { throw ConfigurationError(file: file, line: rule.first?.line ?? 0, message: "`\(e.rule)`: \(e.reason)") }
        }
        return out
    }

    /// Lines beyond which a ruleset is not compiled (sets multiply).
    static let maximumLines = 65536

    mutating func compile(_ tokens: [MarkToken], sets: [String: [MarkToken]], ipv6 family: Bool?, chain: Int32, rule: Int32, location: String) {
        var m = MarkRuleMatch(ipv6: family)
        do throws(MarkRuleMatch.Unsupported) {
            try m.read(tokens, sets: sets)
        } catch {
            notices.append(MarkRuleNotice(location: location, rule: MarkToken.text(tokens), reason: error.reason))
            return
        }
        // A rule that neither marks nor ends its chain changes nothing lvsd sees.
        guard m.mark != nil || m.verdict != .next, !m.matchesNothing else { return }
        let count = m.expansionCount
        guard lines.count + count <= Self.maximumLines else {
            notices.append(
                MarkRuleNotice(
                    location: location, rule: MarkToken.text(tokens), reason: "its sets make more than \(Self.maximumLines) classifier lines in all"))
            return
        }
        for p in m.protocols {
            for d in m.destinations {
                for s in m.sources {
                    for dp in m.destinationPorts {
                        for sp in m.sourcePorts {
                            for i in m.interfaces {
                                let r = FirewallMarkRule(
                                    mark: m.mark, verdict: m.verdict, chain: chain, rule: rule, ipv6: m.ipv6 ?? d?.address.isIPv6 ?? s?.address.isIPv6,
                                    proto: p, destination: d?.address, destinationPrefixLength: d?.length, source: s?.address,
                                    sourcePrefixLength: s?.length, sourcePorts: sp, ports: dp)
                                lines.append(MarkRuleLine(rule: r, interfaceName: i))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A token of nft's syntax, with its line.
struct MarkToken: Sendable, Hashable {
    enum Kind: Sendable, Hashable { case word, string, open, close, comma, end }
    var kind: Kind
    var text: String
    var line: Int

    static func text(_ tokens: [MarkToken]) -> String {
        var out = ""
        for t in tokens {
            if !out.isEmpty && t.kind != .comma { out += " " }
            out += t.kind == .string ? "\"\(t.text)\"" : t.text
        }
        return out
    }
}

/// A prefix (an address is one of its full length).
struct MarkPrefix: Sendable, Hashable {
    var address: IPAddress
    var length: Int
}

/// What one rule matches, each dimension a list of alternatives (nil in a
/// list: any), its mark and its verdict.
struct MarkRuleMatch {
    struct Unsupported: Error {
        var reason: String
    }

    var ipv6: Bool?
    var protocols: [TransportProtocol?] = [nil]
    var sources: [MarkPrefix?] = [nil]
    var destinations: [MarkPrefix?] = [nil]
    var sourcePorts: [ClosedRange<UInt16>] = [0...65535]
    var destinationPorts: [ClosedRange<UInt16>] = [0...65535]
    var interfaces: [String?] = [nil]
    var mark: UInt32?
    var verdict = FirewallMarkRule.Verdict.next
    /// A protocol or family no service of lvsd's takes (icmp, or ip6 in an ip table).
    var matchesNothing = false
    private var seen: Set<String> = []

    init(ipv6: Bool?) { self.ipv6 = ipv6 }

    var expansionCount: Int {
        protocols.count * sources.count * destinations.count * sourcePorts.count * destinationPorts.count * interfaces.count
    }

    mutating func read(_ t: [MarkToken], sets: [String: [MarkToken]]) throws(Unsupported) {
        var i = 0
        func word() throws(Unsupported) -> String {
            guard i < t.count, t[i].kind == .word else { throw Unsupported(reason: "it ends where nft's syntax goes on") }
            i += 1
            return t[i - 1].text
        }
        /// A selector's value: one, an anonymous set, or a named set.
        func values(_ what: String) throws(Unsupported) -> [MarkToken] {
            if i < t.count, t[i].text == "!=" || t[i].text == "<" || t[i].text == ">" || t[i].text == "<=" || t[i].text == ">=" {
                throw Unsupported(reason: "\(what) \(t[i].text): lvsd's classifier matches by equality only")
            }
            if i < t.count, t[i].text == "==" { i += 1 }
            guard i < t.count else { throw Unsupported(reason: "\(what) has no value") }
            if t[i].kind == .open {
                var out: [MarkToken] = []
                i += 1
                while i < t.count, t[i].kind != .close {
                    if t[i].kind != .comma { out.append(t[i]) }
                    i += 1
                }
                i += 1
                return out
            }
            i += 1
            if t[i - 1].text.hasPrefix("@") {
                guard let s = sets[String(t[i - 1].text.dropFirst())] else {
                    throw Unsupported(reason: "\(what) \(t[i - 1].text): a set lvsd cannot read (a map, or elements of several fields)")
                }
                return s
            }
            return [t[i - 1]]
        }
        while i < t.count {
            let w = try word()
            switch w {
            case "ip", "ip6":
                try family(w == "ip6")
                let field = try word()
                switch field {
                case "saddr": sources = try prefixes(values("\(w) saddr"), ipv6: w == "ip6", selector: "\(w) saddr")
                case "daddr": destinations = try prefixes(values("\(w) daddr"), ipv6: w == "ip6", selector: "\(w) daddr")
                case "protocol", "nexthdr": try transport(values("\(w) \(field)"))
                default: throw Unsupported(reason: "\(w) \(field): not a field lvsd's classifier matches")
                }
            case "tcp", "udp", "sctp", "th":
                if w != "th" { try transport([MarkToken(kind: .word, text: w, line: 0)]) }
                let field = try word()
                switch field {
                case "dport": destinationPorts = try ports(values("\(w) dport"), selector: "\(w) dport")
                case "sport": sourcePorts = try ports(values("\(w) sport"), selector: "\(w) sport")
                default: throw Unsupported(reason: "\(w) \(field): not a field lvsd's classifier matches")
                }
            case "meta":
                let key = try word()
                switch key {
                case "l4proto": try transport(values("meta l4proto"))
                case "nfproto":
                    let v = try values("meta nfproto")
                    guard v.count == 1, v[0].text == "ipv4" || v[0].text == "ipv6" else { throw Unsupported(reason: "meta nfproto: one of ipv4, ipv6") }
                    try family(v[0].text == "ipv6")
                case "iifname", "iif": interfaces = try names(values("meta \(key)"))
                case "mark": try setMark(&i, t)
                default: throw Unsupported(reason: "meta \(key): not a field lvsd's classifier matches")
                }
            case "iifname", "iif": interfaces = try names(values(w))
            case "mark": try setMark(&i, t)
            case "counter":
                // nft lists a counter's values: `counter packets N bytes M`.
                if i + 3 < t.count, t[i].text == "packets", t[i + 2].text == "bytes" { i += 4 }
            case "comment": i += 1
            case "accept", "return": verdict = .endChain
            case "drop": verdict = .drop
            case "continue": break
            case "jump", "goto":
                throw Unsupported(reason: "\(w): lvsd does not follow rules into other chains")
            case "ct":
                throw Unsupported(reason: "ct \(i < t.count ? t[i].text : ""): connection tracking's state is not lvsd's")
            default:
                throw Unsupported(reason: "\(w): not a match or statement lvsd's classifier has")
            }
        }
    }

    /// `meta mark set VALUE`, a constant only.
    mutating func setMark(_ i: inout Int, _ t: [MarkToken]) throws(Unsupported) {
        guard i < t.count, t[i].text == "set" else { throw Unsupported(reason: "a match on the mark: lvsd's frames carry none") }
        guard i + 1 < t.count, let v = Self.number(t[i + 1].text) else {
            throw Unsupported(reason: "meta mark set \(i + 1 < t.count ? t[i + 1].text : ""): not a constant mark")
        }
        if i + 2 < t.count, ["and", "or", "xor", "&", "|", "^", "<<", ">>"].contains(t[i + 2].text) {
            throw Unsupported(reason: "meta mark set \(t[i + 1].text) \(t[i + 2].text): not a constant mark")
        }
        mark = v
        i += 2
    }

    static func number(_ s: String) -> UInt32? {
        s.hasPrefix("0x") ? UInt32(s.dropFirst(2), radix: 16) : UInt32(s)
    }

    mutating func family(_ v6: Bool) throws(Unsupported) {
        if let f = ipv6, f != v6 { matchesNothing = true }
        ipv6 = v6
    }

    mutating func once(_ selector: String) throws(Unsupported) {
        guard seen.insert(selector).inserted else { throw Unsupported(reason: "\(selector) twice in one rule") }
    }

    /// Protocols intersect: `meta l4proto tcp tcp dport 80` is TCP.
    mutating func transport(_ v: [MarkToken]) throws(Unsupported) {
        var found: [TransportProtocol?] = []
        for e in v {
            switch e.text {
            case "tcp", "6": found.append(.tcp)
            case "udp", "17": found.append(.udp)
            case "sctp", "132": found.append(.sctp)
            case let x where x.contains("-"): throw Unsupported(reason: "a range of protocols")
            default: break  // a protocol lvsd balances none of
            }
        }
        if protocols != [nil] { found = found.filter { protocols.contains($0) } }
        if found.isEmpty { matchesNothing = true }
        protocols = found.isEmpty ? [nil] : found
    }

    mutating func prefixes(_ v: [MarkToken], ipv6 v6: Bool, selector: String) throws(Unsupported) -> [MarkPrefix?] {
        try once(selector)
        var out: [MarkPrefix?] = []
        for e in v {
            let s = e.text
            if let slash = s.firstIndex(of: "/") {
                guard let a = IPAddress(s[..<slash]), a.isIPv6 == v6, let n = Int(s[s.index(after: slash)...]), n >= 0, n <= (v6 ? 128 : 32) else {
                    throw Unsupported(reason: "\(selector) \(s): not an address or prefix")
                }
                out.append(MarkPrefix(address: a, length: n))
            } else if let dash = s.firstIndex(of: "-") {
                guard let a = IPAddress(s[..<dash]), let b = IPAddress(s[s.index(after: dash)...]), a.isIPv6 == v6, b.isIPv6 == v6,
                    let r = Self.rangePrefixes(a, b)
                else { throw Unsupported(reason: "\(selector) \(s): not a range of addresses that differ in their last 64 bits only") }
                out += r.map { Optional($0) }
            } else {
                guard let a = IPAddress(s), a.isIPv6 == v6 else { throw Unsupported(reason: "\(selector) \(s): not an address") }
                out.append(MarkPrefix(address: a, length: v6 ? 128 : 32))
            }
        }
        guard !out.isEmpty else { throw Unsupported(reason: "\(selector): an empty set") }
        return out
    }

    /// The fewest prefixes that cover exactly `a` to `b` (at most 2 per bit).
    static func rangePrefixes(_ a: IPAddress, _ b: IPAddress) -> [MarkPrefix]? {
        let bits = a.isIPv6 ? 128 : 32
        // Only the low 64 bits may differ: a wider range is no real set of VIPs.
        func split(_ x: IPAddress) -> (UInt64, UInt64) {
            switch x {
            case .v4(let v): (0, UInt64(v.value))
            case .v6(let v): (v.high, v.low)
            }
        }
        let (ah, al) = split(a)
        let (bh, bl) = split(b)
        guard ah == bh, al <= bl else { return nil }
        var out: [MarkPrefix] = []
        var low = al
        while true {
            // The largest aligned block at `low` that ends by `bl`.
            var size = 0
            while size < 63, low & ((1 << UInt64(size + 1)) - 1) == 0, low &+ ((1 << UInt64(size + 1)) - 1) <= bl { size += 1 }
            let address: IPAddress = a.isIPv6 ? .v6(IPv6Address(high: ah, low: low)) : .v4(IPv4Address(UInt32(truncatingIfNeeded: low)))
            out.append(MarkPrefix(address: address, length: bits - size))
            let end = low &+ ((1 << UInt64(size)) - 1)
            if end >= bl { return out }
            low = end + 1
        }
    }

    mutating func ports(_ v: [MarkToken], selector: String) throws(Unsupported) -> [ClosedRange<UInt16>] {
        try once(selector)
        var out: [ClosedRange<UInt16>] = []
        for e in v {
            let parts = e.text.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count <= 2, let lo = UInt16(parts[0]), let hi = UInt16(parts.last!), lo <= hi else {
                throw Unsupported(reason: "\(selector) \(e.text): not a port or range")
            }
            out.append(lo...hi)
        }
        guard !out.isEmpty else { throw Unsupported(reason: "\(selector): an empty set") }
        return out
    }

    mutating func names(_ v: [MarkToken]) throws(Unsupported) -> [String?] {
        try once("iifname")
        guard !v.isEmpty else { throw Unsupported(reason: "iifname: an empty set") }
        return v.map { Optional($0.text) }
    }
}

/// nft's syntax, as far as lvsd reads it: tables, sets and chains, and the
/// rules of the chains as token lists.
struct MarkRuleParser {
    struct Chain {
        var family: String
        var table: String
        var name: String
        var priority: Int
        var ipv6: Bool?
        var sets: [String: [MarkToken]]
        var rules: [[MarkToken]]
    }

    var tokens: [MarkToken] = []
    var i = 0

    init(_ text: String) {
        var line = 1
        var word = ""
        var chars = Array(text.unicodeScalars)
        chars.append("\n")
        var k = 0
        func flush() {
            if !word.isEmpty { tokens.append(MarkToken(kind: .word, text: word, line: line)) }
            word = ""
        }
        while k < chars.count {
            let c = chars[k]
            switch c {
            case "#":
                flush()
                while k < chars.count, chars[k] != "\n" { k += 1 }
                continue
            case "\"":
                flush()
                var s = ""
                k += 1
                while k < chars.count, chars[k] != "\"", chars[k] != "\n" {
                    s.unicodeScalars.append(chars[k])
                    k += 1
                }
                tokens.append(MarkToken(kind: .string, text: s, line: line))
            case "{":
                flush()
                tokens.append(MarkToken(kind: .open, text: "{", line: line))
            case "}":
                flush()
                tokens.append(MarkToken(kind: .close, text: "}", line: line))
            case ",":
                flush()
                tokens.append(MarkToken(kind: .comma, text: ",", line: line))
            case ";", "\n":
                flush()
                tokens.append(MarkToken(kind: .end, text: c == "\n" ? "\\n" : ";", line: line))
                if c == "\n" { line += 1 }
            case " ", "\t", "\r": flush()
            default: word.unicodeScalars.append(c)
            }
            k += 1
        }
    }

    var atEnd: Bool { i >= tokens.count }

    /// One statement: tokens up to the end of a line or a `;` outside
    /// braces (an anonymous set may span lines); a `}` that closes the
    /// enclosing block ends it, unconsumed; a `{` that ends a line opens a
    /// block, and ends the statement that heads it.
    mutating func statement() -> [MarkToken] {
        var out: [MarkToken] = []
        var depth = 0
        while i < tokens.count {
            let t = tokens[i]
            if t.kind == .open && (i + 1 == tokens.count || tokens[i + 1].kind == .end) {
                out.append(t)
                i += 1
                return out
            }
            if t.kind == .end && depth == 0 {
                i += 1
                if out.isEmpty { continue }
                return out
            }
            if t.kind == .close {
                if depth == 0 { return out }
                depth -= 1
            }
            if t.kind == .open { depth += 1 }
            if t.kind != .end { out.append(t) }
            i += 1
        }
        return out
    }

    /// A marks file: every statement is a rule.
    mutating func lines() -> [[MarkToken]] {
        var out: [[MarkToken]] = []
        while !atEnd {
            let s = statement()
            if !s.isEmpty { out.append(s) }
            if i < tokens.count, tokens[i].kind == .close { i += 1 }
        }
        return out
    }

    /// `table FAMILY NAME { … }` blocks: their prerouting base chains.
    mutating func ruleset() -> [Chain] {
        var chains: [Chain] = []
        while !atEnd {
            let head = statement()
            if head.isEmpty && !atEnd {
                i += 1  // a stray `}`
                continue
            }
            guard head.count == 4, head[0].text == "table", head[3].kind == .open else {
                skipBlock(head)
                continue
            }
            let family = head[1].text
            let v6: Bool? = family == "ip" ? false : family == "ip6" ? true : nil
            var sets: [String: [MarkToken]] = [:]
            var tableChains: [Chain] = []
            while !atEnd {
                if tokens[i].kind == .close {
                    i += 1
                    break
                }
                let s = statement()
                if s.count == 3, s[0].text == "set", s[2].kind == .open {
                    sets[s[1].text] = setElements()
                } else if s.count == 3, s[0].text == "chain", s[2].kind == .open {
                    if let c = chain(family: family, table: head[2].text, name: s[1].text, ipv6: v6) { tableChains.append(c) }
                } else {
                    skipBlock(s)
                }
            }
            guard family == "ip" || family == "ip6" || family == "inet" else { continue }
            for var c in tableChains {
                c.sets = sets
                chains.append(c)
            }
        }
        return chains
    }

    /// A block's statement that opened braces it did not close: skipped to its end.
    mutating func skipBlock(_ s: [MarkToken]) {
        var depth = s.reduce(0) { $0 + ($1.kind == .open ? 1 : $1.kind == .close ? -1 : 0) }
        while depth > 0 && i < tokens.count {
            if tokens[i].kind == .open { depth += 1 }
            if tokens[i].kind == .close { depth -= 1 }
            i += 1
        }
    }

    /// A set's `elements = { … }`; nil where its elements have several
    /// fields (`type ipv4_addr . inet_service`) or it is a map.
    mutating func setElements() -> [MarkToken]? {
        var elements: [MarkToken] = []
        var readable = true
        while !atEnd {
            if tokens[i].kind == .close {
                i += 1
                break
            }
            let s = statement()
            if s.first?.text == "type" && s.contains(where: { $0.text == "." || $0.text == ":" }) { readable = false }
            if s.first?.text == "elements" {
                for t in s.dropFirst(2) where t.kind == .word || t.kind == .string {
                    if t.text == ":" || t.text == "." { readable = false }
                    elements.append(t)
                }
            } else {
                skipBlock(s)
            }
        }
        return readable ? elements : nil
    }

    /// A chain's rules, when it is a base chain on the prerouting hook.
    mutating func chain(family: String, table: String, name: String, ipv6: Bool?) -> Chain? {
        var hook: String?
        var priority = 0
        var rules: [[MarkToken]] = []
        while !atEnd {
            if tokens[i].kind == .close {
                i += 1
                break
            }
            let s = statement()
            guard let first = s.first else { continue }
            switch first.text {
            case "type":
                if let h = s.firstIndex(where: { $0.text == "hook" }), h + 1 < s.count { hook = s[h + 1].text }
                if let p = s.firstIndex(where: { $0.text == "priority" }) { priority = Self.priority(Array(s[(p + 1)...])) }
            case "policy", "comment", "devices", "device": break
            default: rules.append(s)
            }
        }
        guard hook == "prerouting" else { return nil }
        return Chain(family: family, table: table, name: name, priority: priority, ipv6: ipv6, sets: [:], rules: rules)
    }

    /// `mangle`, `-150`, `mangle - 5`: nft's standard priorities by name.
    static func priority(_ t: [MarkToken]) -> Int {
        let names = ["raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100]
        guard let first = t.first else { return 0 }
        var p = names[first.text] ?? Int(first.text) ?? 0
        if t.count >= 3, let n = Int(t[2].text) { p += t[1].text == "-" ? -n : t[1].text == "+" ? n : 0 }
        return p
    }
}
